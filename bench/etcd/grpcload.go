// grpcload: the load client of scripts/bench_kv.sh for etcd's gRPC API
// (its fast path; `qraft-kv bench --target etcd` speaks its JSON gateway).
// The same workload as `qraft-kv bench`: C clients, each with a connection
// of its own, one request at a time; 256-byte puts of bench-<client>-<i>,
// or linearizable gets of a key each client wrote first. Prints one line
// in the format of `qraft-kv bench`:
//
//	bench: C clients, N puts of B bytes in S s: R puts/s, p50 X ms, p99 Y ms, max Z ms, F failed
//
// Built by the bench in GOPATH mode against Debian's golang-etcd-server-dev
// (nothing downloaded):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o grpcload grpcload.go
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
)

func main() {
	endpoint := flag.String("server", "127.0.0.1:2379", "host:port of one member")
	clients := flag.Int("clients", 1, "concurrent clients")
	count := flag.Int("count", 0, "requests in all (or --seconds)")
	seconds := flag.Int("seconds", 0, "run this long instead of --count")
	op := flag.String("op", "put", "put or get")
	valueBytes := flag.Int("value-bytes", 256, "value size")
	timeoutMs := flag.Int("timeout-ms", 5000, "per request")
	quantiles := flag.String("quantiles", "", "write the latency distribution here")
	flag.Parse()
	if *clients < 1 || (*count < *clients && *seconds <= 0) || (*op != "put" && *op != "get") {
		fmt.Fprintln(os.Stderr, "usage: grpcload --server H:P --clients C (--count N | --seconds S) [--op put|get]")
		os.Exit(2)
	}
	value := strings.Repeat("x", *valueBytes)
	per := *count / *clients
	var end time.Time
	if *seconds > 0 {
		end = time.Now().Add(time.Duration(*seconds) * time.Second)
	}
	lat := make([][]time.Duration, *clients)
	failed := make([]int, *clients)
	firstErr := make([]error, *clients)
	var wg sync.WaitGroup
	t0 := time.Now()
	for c := 0; c < *clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{*endpoint},
				DialTimeout: 5 * time.Second})
			if err != nil {
				failed[c]++
				firstErr[c] = err
				return
			}
			defer cli.Close()
			do := func(get bool, key string) error {
				ctx, cancel := context.WithTimeout(context.Background(),
					time.Duration(*timeoutMs)*time.Millisecond)
				defer cancel()
				var err error
				if get {
					_, err = cli.Get(ctx, key)
				} else {
					_, err = cli.Put(ctx, key, value)
				}
				return err
			}
			getKey := fmt.Sprintf("bench-get-%d", c)
			if *op == "get" {
				if err := do(false, getKey); err != nil {
					failed[c]++
					firstErr[c] = err
					return
				}
			}
			for i := 0; ; i++ {
				if *seconds > 0 {
					if !time.Now().Before(end) {
						break
					}
				} else if i >= per {
					break
				}
				key := getKey
				if *op == "put" {
					key = fmt.Sprintf("bench-%d-%d", c, i)
				}
				s := time.Now()
				err := do(*op == "get", key)
				lat[c] = append(lat[c], time.Since(s))
				if err != nil {
					if failed[c] == 0 {
						firstErr[c] = err
					}
					failed[c]++
				}
			}
		}(c)
	}
	wg.Wait()
	took := time.Since(t0).Seconds()
	var all []time.Duration
	nfail := 0
	for c := range lat {
		all = append(all, lat[c]...)
		nfail += failed[c]
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	n := len(all)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	p50, p99, max := 0.0, 0.0, 0.0
	if n > 0 {
		p50, p99, max = ms(all[n/2]), ms(all[n*99/100]), ms(all[n-1])
	}
	if *quantiles != "" && n > 0 {
		// 1000 lines "quantile milliseconds", as qraft-kv bench --quantiles
		f, err := os.Create(*quantiles)
		if err == nil {
			for q := 1; q <= 1000; q++ {
				i := n*q/1000 - 1
				if i < 0 {
					i = 0
				}
				fmt.Fprintf(f, "%.3f %.4f\n", float64(q)/1000, ms(all[i]))
			}
			f.Close()
		}
	}
	what := "puts"
	if *op == "get" {
		what = "gets"
	}
	fmt.Printf("bench: %d clients, %d %s of %d bytes in %.2f s: %.0f %s/s, p50 %.2f ms, p99 %.2f ms, max %.2f ms, %d failed\n",
		*clients, n, what, *valueBytes, took, float64(n)/took, what, p50, p99, max, nfail)
	for c := range firstErr {
		if firstErr[c] != nil {
			fmt.Fprintf(os.Stderr, "grpcload: first failure (client %d): %v\n", c, firstErr[c])
			break
		}
	}
	if nfail > 0 {
		os.Exit(1)
	}
}
