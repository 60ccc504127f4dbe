//! Small helpers over `prometheus-client`'s encoder: one family per call,
//! HELP written as given (the registry's `register` would append a ".").
//! Counter names are given without `_total`; the encoder appends it.

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabel, EncodeLabelSet, EncodeLabelValue,
    EncodeMetric, LabelSetEncoder, NoLabelSet,
};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;

use super::AgentSample;

pub(super) type Res = std::fmt::Result;

/// An unlabelled counter.
pub(super) fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Res {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// An unlabelled gauge.
pub(super) fn gauge<V: EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: V,
) -> Res {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

/// A counter with one label, one sample per `(label value, count)`.
pub(super) fn counters_by<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> Res {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (lv, v) in values {
        m.encode_family(&[(label, lv)])?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
    }
    Ok(())
}

/// A gauge with one label, one sample per `(label value, value)`.
pub(super) fn gauges_by<'a, V: EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, V)>,
) -> Res {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (lv, v) in values {
        m.encode_family(&[(label, lv)])?.encode_gauge(&v)?;
    }
    Ok(())
}

/// The labels of one agent's per-pid series: `pid` first (the original's
/// only label), `name` always, `unit` and `container` when known. Values
/// are escaped by the encoder.
struct AgentLabels<'a>(&'a AgentSample);

impl EncodeLabelSet for AgentLabels<'_> {
    fn encode(&self, e: &mut LabelSetEncoder) -> Res {
        let a = self.0;
        ("pid", a.pid).encode(e.encode_label())?;
        ("name", &*a.name).encode(e.encode_label())?;
        if let Some(u) = &a.unit {
            ("unit", &**u).encode(e.encode_label())?;
        }
        if let Some(c) = &a.container {
            ("container", &**c).encode(e.encode_label())?;
        }
        Ok(())
    }
}

/// A gauge with two labels, one sample per `(first value, second value,
/// value)`.
pub(super) fn gauges_by2<'a, V: EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: (&str, &str),
    values: impl IntoIterator<Item = (&'a str, &'a str, V)>,
) -> Res {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (a, b, v) in values {
        m.encode_family(&[(labels.0, a), (labels.1, b)])?
            .encode_gauge(&v)?;
    }
    Ok(())
}

/// A per-pid counter from the snapshot.
pub(super) fn per_pid_counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    agents: &[AgentSample],
    value: impl Fn(&AgentSample) -> u64,
) -> Res {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for a in agents {
        m.encode_family(&AgentLabels(a))?
            .encode_counter::<NoLabelSet, _, u64>(&value(a), None)?;
    }
    Ok(())
}

/// A per-pid gauge from the snapshot.
pub(super) fn per_pid_gauge<V: EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    agents: &[AgentSample],
    value: impl Fn(&AgentSample) -> V,
) -> Res {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for a in agents {
        m.encode_family(&AgentLabels(a))?.encode_gauge(&value(a))?;
    }
    Ok(())
}

/// A histogram handle, unlabelled.
pub(super) fn histogram(e: &mut DescriptorEncoder, name: &str, help: &str, h: &Histogram) -> Res {
    h.encode(e.encode_descriptor(name, help, None, MetricType::Histogram)?)
}

/// A histogram family with one label.
pub(super) fn histograms_by<'a, L: EncodeLabelValue + 'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (L, &'a Histogram)>,
) -> Res {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (lv, h) in values {
        h.encode(m.encode_family(&[(label, lv)])?)?;
    }
    Ok(())
}

/// A histogram that never observes anything (retired families): every
/// bucket of `buckets`, `+Inf`, sum and count at zero.
pub(super) fn empty_histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> Res {
    // With `+Inf` explicitly: the OpenMetrics encoder does not add it.
    let zeros: Vec<(f64, u64)> = buckets
        .iter()
        .chain(&[f64::INFINITY])
        .map(|&b| (b, 0))
        .collect();
    e.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(0.0, 0, &zeros, None)
}
