package distributed

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// Benchmarks. Bus bandwidth follows nccl-tests: busbw = S/t * 2(n-1)/n, the
// rate each link carries during a ring all-reduce, comparable across n and
// with the raw link bound (BenchmarkTCPPump).
//
//	go test ./distributed -run '^$' -bench . -benchtime 2x
//	SAGEFIT_BENCH_LARGE=1 adds 256 MiB buffers.

func benchSizes() []int {
	s := []int{4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20}
	if os.Getenv("SAGEFIT_BENCH_LARGE") != "" {
		s = append(s, 256<<20)
	}
	return s
}

func sizeName(b int) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%dMiB", b>>20)
	case b >= 1<<10:
		return fmt.Sprintf("%dKiB", b>>10)
	}
	return fmt.Sprintf("%dB", b)
}

func reportBusBW(b *testing.B, bytes, n int, elapsed time.Duration) {
	t := elapsed.Seconds() / float64(b.N)
	b.ReportMetric(float64(bytes)/t*2*float64(n-1)/float64(n)/1e6, "busbw-MB/s")
	b.ReportMetric(float64(bytes)/t/1e6, "algbw-MB/s")
}

// runAllReduce times b.N all-reduces of bytes on every group at once.
func runAllReduce(b *testing.B, gs []*Group, bytes int) {
	n := len(gs)
	bufs := make([][]float32, n)
	for r := range bufs {
		bufs[r] = make([]float32, bytes/4)
		for i := range bufs[r] {
			bufs[r][i] = float32(i%251) * 0.5
		}
	}
	b.SetBytes(int64(bytes))
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		errs := onAll(b, gs, func(ctx context.Context, g *Group) error {
			return g.AllReduce(ctx, bufs[g.Rank()], Sum)
		})
		noErrors(b, errs)
	}
	reportBusBW(b, bytes, n, time.Since(start))
}

func BenchmarkGRPCAllReduce(b *testing.B) {
	for _, n := range []int{2, 3, 4} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			gs, errs := joinAll(b, loopbackConfigs(b, n, "bench"))
			noErrors(b, errs)
			defer closeAll(b, gs)
			for _, size := range benchSizes() {
				b.Run("size="+sizeName(size), func(b *testing.B) { runAllReduce(b, gs, size) })
			}
		})
	}
}

// BenchmarkMemAllReduce is the same ring with no network: what the core
// itself costs (reduction, copies, scheduling) on this machine.
func BenchmarkMemAllReduce(b *testing.B) {
	for _, n := range []int{2, 3, 4} {
		for _, size := range []int{1 << 20, 16 << 20} {
			b.Run(fmt.Sprintf("n=%d/size=%s", n, sizeName(size)), func(b *testing.B) {
				gs, _ := memGroups(b, n, Faults{})
				runAllReduce(b, gs, size)
			})
		}
	}
}

// BenchmarkGRPCTuning measures the transport knobs on one size large enough
// to be bandwidth-bound: flow-control windows (grpc-go's BDP auto-tuning
// versus fixed windows, which turn auto-tuning off), socket I/O buffer
// sizes, and chunk size.
func BenchmarkGRPCTuning(b *testing.B) {
	const n, size = 3, 64 << 20
	cases := []struct {
		name  string
		tune  grpcTuning
		chunk int
	}{
		{"bdp-auto/io=32KiB/chunk=1MiB", grpcTuning{writeBuf: 32 << 10, readBuf: 32 << 10}, 1 << 20},
		{"bdp-auto/io=256KiB/chunk=1MiB", grpcTuning{}, 1 << 20},
		{"static-1MiB-stream-4MiB-conn/io=256KiB/chunk=1MiB", grpcTuning{streamWindow: 1 << 20, connWindow: 4 << 20}, 1 << 20},
		{"static-4MiB-stream-16MiB-conn/io=256KiB/chunk=1MiB", grpcTuning{streamWindow: 4 << 20, connWindow: 16 << 20}, 1 << 20},
		{"static-16MiB-stream-64MiB-conn/io=256KiB/chunk=1MiB", grpcTuning{streamWindow: 16 << 20, connWindow: 64 << 20}, 1 << 20},
		{"static-256KiB-stream-1MiB-conn/io=256KiB/chunk=1MiB", grpcTuning{streamWindow: 256 << 10, connWindow: 1 << 20}, 1 << 20},
		{"static-512KiB-stream-2MiB-conn/io=256KiB/chunk=1MiB", grpcTuning{streamWindow: 512 << 10, connWindow: 2 << 20}, 1 << 20},
		{"static-1MiB-stream-4MiB-conn/io=256KiB/chunk=256KiB", grpcTuning{streamWindow: 1 << 20, connWindow: 4 << 20}, 256 << 10},
		{"static-1MiB-stream-4MiB-conn/io=32KiB/chunk=1MiB", grpcTuning{streamWindow: 1 << 20, connWindow: 4 << 20, writeBuf: 32 << 10, readBuf: 32 << 10}, 1 << 20},
		{"static-2MiB-stream-8MiB-conn/io=256KiB/chunk=1MiB", grpcTuning{streamWindow: 2 << 20, connWindow: 8 << 20}, 1 << 20},
		{"bdp-auto/io=1MiB/chunk=1MiB", grpcTuning{writeBuf: 1 << 20, readBuf: 1 << 20}, 1 << 20},
		{"bdp-auto/io=256KiB/chunk=256KiB", grpcTuning{}, 256 << 10},
		{"bdp-auto/io=256KiB/chunk=4MiB-1KiB", grpcTuning{}, 4<<20 - 1024},
		{"static-4MiB-stream-16MiB-conn/io=256KiB/chunk=4MiB-1KiB", grpcTuning{streamWindow: 4 << 20, connWindow: 16 << 20}, 4<<20 - 1024},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			cfgs := loopbackConfigs(b, n, "tune")
			for r := range cfgs {
				cfgs[r].tune = tc.tune
				cfgs[r].ChunkBytes = tc.chunk
				cfgs[r].Logf = nil
			}
			gs, errs := joinAll(b, cfgs)
			noErrors(b, errs)
			defer closeAll(b, gs)
			runAllReduce(b, gs, size)
		})
	}
}

// BenchmarkTCPPump is the physical bound: n plain TCP connections on
// loopback arranged as a ring, every one streaming 1 MiB writes at once (as
// every link does during a ring all-reduce). Its link-MB/s is the ceiling
// for busbw-MB/s at the same n on this machine.
func BenchmarkTCPPump(b *testing.B) {
	for _, n := range []int{1, 2, 3, 4} {
		b.Run(fmt.Sprintf("links=%d", n), func(b *testing.B) {
			const block = 1 << 20
			type pair struct{ w, r net.Conn }
			pairs := make([]pair, n)
			for i := range pairs {
				lis, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", i+1))
				if err != nil {
					b.Skip(err)
				}
				accepted := make(chan net.Conn, 1)
				go func() {
					c, _ := lis.Accept()
					accepted <- c
				}()
				w, err := net.Dial("tcp", lis.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				pairs[i] = pair{w: w, r: <-accepted}
				lis.Close()
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
