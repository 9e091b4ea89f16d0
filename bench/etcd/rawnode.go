// rawnode: etcd raft 3.4's RawNode in the workloads of bench/core/bench_core.c,
// so that `make bench` compares the two cores in the same run instead of
// with a figure from another day. Like bench_core: in memory, no I/O, the
// driver persists synchronously (entries appended to a MemoryStorage before
// the update's messages leave), never ticks while measuring, compacts every
// 1024 applied entries keeping 512, 128-byte payloads; each workload runs
// `-repeats` times on a new cluster warmed up first, and the median is
// printed with min..max and allocations per op (Go's heap allocations,
// runtime.MemStats.Mallocs).
//
//	one      propose one entry on a single voter, handle its Ready, apply
//	three    three voters, 1 in flight: the leader proposes, messages go
//	         through one FIFO queue until all three applied the entry
//	three64  the same keeping 64 proposals in flight, one message delivered
//	         between top-ups
//
// Output, one line a workload:
//
//	rawnode WORKLOAD NS_MEDIAN NS_MIN NS_MAX ALLOCS_PER_OP
//
// Built by scripts/bench.sh in GOPATH mode against Debian's
// golang-etcd-server-dev (nothing downloaded).
package main

import (
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"os"
	"runtime"
	"sort"
	"time"

	"go.etcd.io/etcd/raft"
	pb "go.etcd.io/etcd/raft/raftpb"
)

var payload = make([]byte, 128)

type node struct {
	rn      *raft.RawNode
	st      *raft.MemoryStorage
	applied uint64 // normal entries with data applied
	last    uint64 // index of the last entry applied
	compact uint64 // applied entries since the last compaction
}

func newNode(id uint64, peers []raft.Peer) *node {
	st := raft.NewMemoryStorage()
	rn, err := raft.NewRawNode(&raft.Config{
		ID: id, ElectionTick: 10, HeartbeatTick: 1, Storage: st,
		MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 256,
		Logger: &raft.DefaultLogger{Logger: log.New(ioutil.Discard, "", 0)},
	})
	if err != nil {
		panic(err)
	}
	if err := rn.Bootstrap(peers); err != nil {
		panic(err)
	}
	return &node{rn: rn, st: st}
}

// handle takes one Ready: persists, returns its messages, applies.
func (n *node) handle(out *[]pb.Message) bool {
	if !n.rn.HasReady() {
		return false
	}
	rd := n.rn.Ready()
	if !raft.IsEmptyHardState(rd.HardState) {
		n.st.SetHardState(rd.HardState)
	}
	n.st.Append(rd.Entries)
	*out = append(*out, rd.Messages...)
	for _, e := range rd.CommittedEntries {
		switch e.Type {
		case pb.EntryConfChange:
			var cc pb.ConfChange
			cc.Unmarshal(e.Data)
			n.rn.ApplyConfChange(cc)
		case pb.EntryNormal:
			if len(e.Data) > 0 {
				n.applied++
				n.compact++
			}
		}
		n.last = e.Index
	}
	n.rn.Advance(rd)
	if n.compact >= 1024 && n.last > 512 {
		n.st.Compact(n.last - 512)
		n.compact = 0
	}
	return true
}

type cluster struct {
	nodes    []*node
	queue    []pb.Message
	head     int
	proposed uint64
}

func newCluster(n int) *cluster {
	var peers []raft.Peer
	for i := 1; i <= n; i++ {
		peers = append(peers, raft.Peer{ID: uint64(i)})
	}
	c := &cluster{}
	for i := 1; i <= n; i++ {
		c.nodes = append(c.nodes, newNode(uint64(i), peers))
	}
	c.drain() // persist and apply the bootstrap configuration first
	c.queue = c.queue[:0]
	c.nodes[0].rn.Campaign()
	c.settle()
	if c.nodes[0].rn.Status().RaftState != raft.StateLeader {
		panic("no leader")
	}
	return c
}

// drain handles every node's Ready until none has one.
func (c *cluster) drain() {
	for more := true; more; {
		more = false
		for _, n := range c.nodes {
			for n.handle(&c.queue) {
				more = true
			}
		}
	}
}

// deliverOne steps the oldest queued message; false if none.
func (c *cluster) deliverOne() bool {
	if c.head == len(c.queue) {
		c.queue = c.queue[:0]
		c.head = 0
		return false
	}
	m := c.queue[c.head]
	c.head++
	if c.head >= 64 && 2*c.head >= len(c.queue) {
		// a FIFO that never empties (messages are left over when an op
		// completes): move what is left to the front, as a ring would
		n := copy(c.queue, c.queue[c.head:])
		c.queue = c.queue[:n]
		c.head = 0
	}
	c.nodes[m.To-1].rn.Step(m)
	c.nodes[m.To-1].handle(&c.queue)
	return true
}

func (c *cluster) settle() {
	c.drain()
	for c.deliverOne() {
	}
}

func (c *cluster) minApplied() uint64 {
	m := c.nodes[0].applied
	for _, n := range c.nodes[1:] {
		if n.applied < m {
			m = n.applied
		}
	}
	return m
}

// run does `ops` operations of the workload; a new cluster each call.
func run(workload string, ops int) (time.Duration, float64) {
	var c *cluster
	switch workload {
	case "one":
		c = newCluster(1)
	default:
		c = newCluster(3)
	}
	leader := c.nodes[0]
	inflight := uint64(1)
	if workload == "three64" {
		inflight = 64
	}
	op := func(target uint64) {
		switch workload {
		case "one":
			leader.rn.Propose(payload)
			leader.handle(&c.queue)
			c.queue = c.queue[:0]
		default:
			for c.minApplied() < target {
				// keep `inflight` proposals ahead of the slowest node
				if c.proposed-c.minApplied() < inflight {
					leader.rn.Propose(payload)
					c.proposed++
					leader.handle(&c.queue)
					continue
				}
				if !c.deliverOne() {
					c.drain()
				}
			}
		}
	}
	warm := 5000
	for i := 1; i <= warm; i++ {
		op(uint64(i))
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	m0 := ms.Mallocs
	t0 := time.Now()
	for i := warm + 1; i <= warm+ops; i++ {
		op(uint64(i))
	}
	d := time.Since(t0)
	runtime.ReadMemStats(&ms)
	return d / time.Duration(ops), float64(ms.Mallocs-m0) / float64(ops)
}

func main() {
	repeats := flag.Int("repeats", 5, "runs per workload")
	scale := flag.Float64("scale", 1, "scale the number of ops")
	only := flag.String("only", "", "one workload (one, three, three64)")
	flag.Parse()
	ops := map[string]int{"one": 200000, "three": 40000, "three64": 40000}
	for _, w := range []string{"one", "three", "three64"} {
		if *only != "" && *only != w {
			continue
		}
		n := int(float64(ops[w]) * *scale)
		if n < 100 {
			n = 100
		}
		var ts []time.Duration
		var allocs float64
		for r := 0; r < *repeats; r++ {
			t, a := run(w, n)
			ts = append(ts, t)
			allocs = a
		}
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		fmt.Printf("rawnode %s %d %d %d %.1f\n", w, ts[len(ts)/2].Nanoseconds(),
			ts[0].Nanoseconds(), ts[len(ts)-1].Nanoseconds(), allocs)
	}
	os.Exit(0)
}
