package distributed_test

import (
	"context"
	"fmt"
	"sync"

	"github.com/sagefit/sagefit/distributed"
)

// Three ranks in one process, over the in-memory network: each passes its
// own gradient and every rank ends with the same sum. Over real hosts,
// transport.Join returns the Group instead.
func ExampleGroup_AllReduce() {
	const world = 3
	nw := distributed.NewMemNetwork(world, distributed.Faults{})
	bufs := [world][]float32{{1, 2, 3, 4}, {10, 20, 30, 40}, {100, 200, 300, 400}}
	groups := make([]*distributed.Group, world)
	for rank := range world {
		g, err := distributed.NewGroup(nw.Transport(rank), rank, world)
		if err != nil {
			panic(err)
		}
		defer g.Close()
		groups[rank] = g
	}
	var wg sync.WaitGroup
	for rank, g := range groups { // every rank at once, as separate hosts would
		wg.Go(func() {
			if err := g.AllReduce(context.Background(), bufs[rank], distributed.Sum); err != nil {
				panic(err)
			}
		})
	}
	wg.Wait()
	for rank, buf := range bufs {
		fmt.Println("rank", rank, buf)
	}
	// Output:
	// rank 0 [111 222 333 444]
	// rank 1 [111 222 333 444]
	// rank 2 [111 222 333 444]
}

// Rank 0's bytes (initial weights, say) reach every other rank.
func ExampleGroup_Broadcast() {
	const world, root = 3, 0
	nw := distributed.NewMemNetwork(world, distributed.Faults{})
	bufs := make([][]byte, world)
	for rank := range bufs {
		bufs[rank] = make([]byte, 5)
	}
	copy(bufs[root], "hello")
	groups := make([]*distributed.Group, world)
	for rank := range world {
		g, err := distributed.NewGroup(nw.Transport(rank), rank, world)
		if err != nil {
			panic(err)
		}
		defer g.Close()
		groups[rank] = g
	}
	var wg sync.WaitGroup
	for rank, g := range groups { // every rank at once, as separate hosts would
		wg.Go(func() {
			if err := g.Broadcast(context.Background(), bufs[rank], root); err != nil {
				panic(err)
			}
		})
	}
	wg.Wait()
	for rank, buf := range bufs {
		fmt.Printf("rank %d %s\n", rank, buf)
	}
	// Output:
	// rank 0 hello
	// rank 1 hello
	// rank 2 hello
}
