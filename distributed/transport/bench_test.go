package transport

import (
	"context"
	"fmt"
	"testing"

	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/distributed/internal/ringtest"
)

// Benchmarks of the ring over this transport. Bus bandwidth follows
// nccl-tests (ringtest.RunAllReduce); the raw TCP bound at the same n is
// BenchmarkTCPPump and the core alone BenchmarkMemAllReduce, both in
// package distributed.
//
//	go test ./distributed/transport -run '^$' -bench GRPCAllReduce
//	go test ./distributed/transport -run '^$' -bench GRPCTuning -benchtime 8x -count 3
//	SAGEFIT_BENCH_LARGE=1 adds 256 MiB buffers.

// runAllReduce times b.N all-reduces of bytes on every group at once.
func runAllReduce(b *testing.B, gs []*distributed.Group, bytes int) {
	ringtest.RunAllReduce(b, gs, bytes, func(ctx context.Context, g *distributed.Group, buf []float32) error {
		return g.AllReduce(ctx, buf, distributed.Sum)
	})
}

// BenchmarkGRPCAllReduce: the ring joined over gRPC with its chunks on the
// data lanes (the default) and on the gRPC streams (DataOverGRPC).
func BenchmarkGRPCAllReduce(b *testing.B) {
	for _, data := range []string{"lane", "grpc"} {
		for _, n := range []int{2, 3, 4} {
			b.Run(fmt.Sprintf("data=%s/n=%d", data, n), func(b *testing.B) {
				cfgs := loopbackConfigs(b, n, "bench")
				for r := range cfgs {
					cfgs[r].DataOverGRPC = data == "grpc"
					cfgs[r].Logf = nil
				}
				gs, errs := joinAll(b, cfgs)
				noErrors(b, errs)
				defer closeAll(b, gs)
				for _, size := range ringtest.BenchSizes() {
					b.Run("size="+ringtest.SizeName(size), func(b *testing.B) { runAllReduce(b, gs, size) })
				}
			})
		}
	}
}

// BenchmarkGRPCTuning measures the gRPC stream knobs, with the chunks on
// the streams (no data lane), on one size large enough to be
// bandwidth-bound: flow-control windows (grpc-go's BDP auto-tuning versus
// fixed windows, which turn auto-tuning off), socket I/O buffer sizes, and
// chunk size.
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
				cfgs[r].tune.noLane = true
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
