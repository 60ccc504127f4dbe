# Feeds N plaintext UDP agents to a running observer, then takes K agents
# snapshots through the control API and prints the loop cost of each.
import json, socket, struct, sys, time, subprocess, zlib
MAGIC=bytes.fromhex(sys.argv[5]); VERSION=int(sys.argv[6])
N=int(sys.argv[1]); K=int(sys.argv[2]); ctl=sys.argv[3]; port=int(sys.argv[4])
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8<<20)
def get(path):
    out=subprocess.run(["curl","-s","--unix-socket",ctl,"http://x"+path],capture_output=True).stdout
    return json.loads(out)
T=[]
for i in range(256):
    c=i
    for _ in range(8):
        c = (c>>1) ^ 0x82F63B78 if c&1 else c>>1
    T.append(c)
def crc32c(b):
    c=0xFFFFFFFF
    for x in b:
        c=T[(c^x)&0xFF]^(c>>8)
    return c^0xFFFFFFFF
PID0=1<<23
def frame(pid,nonce):
    b=MAGIC+bytes([VERSION,0])+struct.pack("<IQQI",pid,nonce*1000,nonce,0)
    return b+struct.pack("<I",crc32c(b))
t=time.time()
dst=("127.0.0.1",port)
rnd=1
while True:
    for i in range(N):
        s.sendto(frame(PID0+i,rnd),dst)
        if i%2000==1999: time.sleep(0.004)
    rnd+=1
    alive=get("/v1/status")["counts"]["alive"]
    print(f"round {rnd-1}: {alive} alive after {time.time()-t:.0f} s", file=sys.stderr)
    if alive>=N: break
res=[]
for k in range(K):
    time.sleep(0.3)  # older than the 250 ms share window: a new snapshot
    st=get("/v1/status")
    res.append((st["snapshot"]["loop_us"], st["snapshot"]["longest_chunk_us"], st["snapshot"]["agents"]))
    print(res[-1])
