/* Memory floor of a 1 M-agent control-API snapshot on this machine
 * (BENCHMARKS.md "snapshot"): memcpy of 64 MiB, reading one byte per
 * 64-byte line, and the snapshot's own work (read every 64-byte slot,
 * write a 32-byte record and read an 8-byte name per agent) on one and on
 * two threads.  gcc -O2 -pthread -o /tmp/floor snapshot_floor.c && /tmp/floor */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
typedef struct __attribute__((aligned(64))) {uint64_t nonce,beat,term,start;uint32_t pid,ns,payload,b1,b2,prev,next;uint8_t state,origin,status,flags;} Slot;
typedef struct {uint64_t beat,nonce;uint32_t pid,payload,id;uint16_t rule;uint8_t f,t;} Rec;
typedef struct {uint32_t id;uint16_t rule,pad;} Name;
static const size_t n=1<<20;static Slot*s;static Rec*r;static Name*m;
typedef struct{size_t a,b;}Range;
static void*copy(void*p){Range*g=p;size_t o=g->a;for(size_t i=g->a;i<g->b;i++){Slot*x=&s[i];if(x->state==3)continue;Rec*y=&r[o++];
 y->beat=x->beat;y->nonce=x->nonce;y->pid=x->pid;y->payload=x->payload;y->id=m[i].id;y->rule=m[i].rule;
 y->f=(x->flags&1)|(x->state<<1)|(x->flags&0xf8);y->t=x->status|(x->origin<<2);}return 0;}
int main(void){size_t bytes=64<<20;char*a=malloc(bytes),*b=malloc(bytes);memset(a,1,bytes);memset(b,2,bytes);
 for(int i=0;i<5;i++){double t=now();memcpy(b,a,bytes);double d=now()-t;printf("memcpy 64 MiB: %.2f ms (%.2f GB/s)\n",d*1e3,bytes/d/1e9);}
 long q=0;for(int i=0;i<3;i++){double t=now();for(size_t j=0;j<bytes;j+=64)q+=a[j];printf("read 1 B per line of 64 MiB: %.2f ms\n",(now()-t)*1e3);}
 s=aligned_alloc(64,n*sizeof(Slot));r=malloc(n*sizeof(Rec));m=malloc(n*sizeof(Name));
 memset(s,1,n*sizeof(Slot));memset(r,0,n*sizeof(Rec));memset(m,3,n*sizeof(Name));for(size_t i=0;i<n;i++)s[i].state=0;
 for(int k=0;k<6;k++){double t=now();Range g={0,n};copy(&g);printf("records, 1 thread: %.2f ms\n",(now()-t)*1e3);}
 for(int k=0;k<6;k++){double t=now();pthread_t th;Range g1={0,n/2},g2={n/2,n};pthread_create(&th,0,copy,&g2);copy(&g1);pthread_join(th,0);
  printf("records, 2 threads: %.2f ms\n",(now()-t)*1e3);}
 return q==7;}
