package transport_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/distributed/transport"
)

// Two "hosts" in one process, on loopback: each joins the job and
// all-reduces its gradient over gRPC and the data lane. On SageMaker each
// host runs Join once, with Hosts and Self from resourceconfig.json and no
// Addrs (names resolve) or Listener.
func ExampleJoin() {
	hosts := []string{"algo-1", "algo-2"}
	addrs := map[string]string{}
	listeners := make([]net.Listener, len(hosts))
	for r, h := range hosts {
		l, err := net.Listen("tcp", "127.0.0.1:0") // a free port, bound before anyone dials it
		if err != nil {
			panic(err)
		}
		listeners[r], addrs[h] = l, l.Addr().String()
	}
	bufs := [][]float32{{1, 2, 3}, {10, 20, 30}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	groups := make([]*distributed.Group, len(hosts))
	var wg sync.WaitGroup
	for r, h := range hosts { // every host at once, as separate machines would
		wg.Go(func() {
			g, err := transport.Join(ctx, transport.Config{JobName: "example", Hosts: hosts, Self: h,
				Addrs: addrs, Listener: listeners[r], Fingerprint: "model-v1"})
			if err != nil {
				panic(err)
			}
			groups[r] = g
			if err := g.AllReduce(ctx, bufs[g.Rank()], distributed.Sum); err != nil {
				panic(err)
			}
		})
	}
	wg.Wait()
	for _, g := range groups {
		g.Close()
	}
	fmt.Println(bufs[0], bufs[1])
	// Output: [11 22 33] [11 22 33]
}

func ExampleParseHostAddrs() {
	addrs, err := transport.ParseHostAddrs("algo-1=127.0.0.1:7001, algo-2=127.0.0.2:7001")
	if err != nil {
		panic(err)
	}
	fmt.Println(addrs["algo-1"], addrs["algo-2"])
	// Output: 127.0.0.1:7001 127.0.0.2:7001
}
