package distributed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sagefit/sagefit/distributed/internal/ringtest"
)

// Benchmarks of the core, and the machine's yardsticks. Bus bandwidth
// follows nccl-tests (see ringtest.RunAllReduce). The ring over gRPC and
// its tuning are measured beside the transport (package transport).
//
//	go test ./distributed -run '^$' -bench 'TCPPump|MemAllReduce|Add'
//	go test ./distributed/transport -run '^$' -bench GRPCAllReduce
//	SAGEFIT_BENCH_LARGE=1 adds 256 MiB buffers.

// BenchmarkMemAllReduce is the same ring with no network: what the core
// itself costs (reduction, copies, scheduling) on this machine.
func BenchmarkMemAllReduce(b *testing.B) {
	for _, n := range []int{2, 3, 4} {
		for _, size := range []int{1 << 20, 16 << 20} {
			b.Run(fmt.Sprintf("n=%d/size=%s", n, ringtest.SizeName(size)), func(b *testing.B) {
				gs, _ := memGroups(b, n, Faults{})
				ringtest.RunAllReduce(b, gs, size, func(ctx context.Context, g *Group, buf []float32) error {
					return g.AllReduce(ctx, buf, Sum)
				})
			})
		}
	}
}

// loopbackPair returns both ends of one TCP connection on ip.
func loopbackPair(ip string) (w, r net.Conn, err error) {
	lis, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return nil, nil, err
	}
	defer lis.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := lis.Accept()
		accepted <- c
	}()
	if w, err = net.Dial("tcp", lis.Addr().String()); err != nil {
		return nil, nil, err
	}
	if r = <-accepted; r == nil {
		w.Close()
		return nil, nil, errors.New("accept failed")
	}
	return w, r, nil
}

// BenchmarkTCPPump is the physical bound: n plain TCP connections on
// loopback arranged as a ring, every one streaming 1 MiB writes at once (as
// every link does during a ring all-reduce). Its link-MB/s is the ceiling
// for busbw-MB/s at the same n on this machine (BenchmarkGRPCAllReduce in
// package transport).
func BenchmarkTCPPump(b *testing.B) {
	for _, n := range []int{1, 2, 3, 4} {
		b.Run(fmt.Sprintf("links=%d", n), func(b *testing.B) {
			const block = 1 << 20
			type pair struct{ w, r net.Conn }
			pairs := make([]pair, n)
			for i := range pairs {
				w, r, err := loopbackPair(fmt.Sprintf("127.0.0.%d", i+1))
				if err != nil {
					b.Skip(err)
				}
				pairs[i] = pair{w: w, r: r}
			}
			defer func() {
				for _, p := range pairs {
					p.w.Close()
					p.r.Close()
				}
			}()
			total := int64(b.N) * 64 << 20 // 64 MiB per link per iteration
			b.SetBytes(64 << 20)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for _, p := range pairs {
				wg.Go(func() {
					buf := make([]byte, block)
					for sent := int64(0); sent < total; sent += block {
						if _, err := p.w.Write(buf); err != nil {
							b.Error(err)
							return
						}
					}
				})
				wg.Go(func() {
					buf := make([]byte, block)
					for got := int64(0); got < total; {
						k, err := p.r.Read(buf)
						if err != nil {
							b.Error(err)
							return
						}
						got += int64(k)
					}
				})
			}
			wg.Wait()
			el := time.Since(start).Seconds()
			b.ReportMetric(float64(total)/el/1e6, "link-MB/s")
		})
	}
}

// BenchmarkAdd compares the reduction kernels (see addF32): gonum's
// blas32.Axpy against the unrolled Go loop, in L1/L2 and beyond cache.
func BenchmarkAdd(b *testing.B) {
	for _, n := range []int{1 << 10, 64 << 10, 4 << 20} {
		x, y := make([]float32, n), make([]float32, n)
		for i := range x {
			x[i], y[i] = float32(i), 1
		}
		for _, k := range []struct {
			name string
			f    func(dst, src []float32)
		}{{"blas32.Axpy", addF32BLAS}, {"loop", addF32Loop}} {
			b.Run(fmt.Sprintf("%s/n=%d", k.name, n), func(b *testing.B) {
				b.SetBytes(int64(4 * n))
				for range b.N {
					k.f(y, x)
				}
			})
		}
	}
}
