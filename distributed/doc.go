// Package distributed is sagefit's data-parallel communication core: the
// collective algorithms over the hosts of one training job, with no
// knowledge of models or SageMaker, and no network.
//
// # What it owns, what it must not import
//
// It owns the algorithms (ring.go), the Group that drives them over a
// Transport (group.go), the message and its ownership rules (message.go,
// payloads.go), the reduction kernels (kernels.go), the errors every
// failure surfaces as (errors.go) and an in-memory network with seeded
// fault injection for tests (memnet.go). It is pure and deterministic: it
// must not import network, process or system-call code (net, net/...,
// google.golang.org/grpc..., os/exec, syscall; TestCoreImportsNoNetwork
// enforces it), read the environment, or know about models or SageMaker.
// The network is package transport (distributed/transport): gRPC links, a
// TCP data lane beside each, and Join, which returns a Group.
//
// # Layers
//
// The algorithms are pure state machines (Machine: NewAllReduce,
// NewAllReduceFloat64, NewBroadcast, NewBarrier), in the style of etcd's
// raft: they consume and produce Messages and touch no sockets, clocks or
// goroutines, so tests drive them directly under any interleaving.
//
// Group drives one machine per collective over a Transport and adds the link
// layer: per-link sequence numbers, so duplicated and reordered messages are
// absorbed and a lost one becomes a timeout naming the silent peer and the
// step; a relay of failures round the ring, so every survivor names the lost
// peer rather than its innocent neighbour; a relay of suspicion, so that
// even ranks whose timers fire first name the silent peer (see Failure
// model); and a bound on every collective.
//
// Transports: MemNetwork (in-process, with seeded fault injection, for
// tests) and package transport (gRPC, with a data lane per link).
//
// # Hooks for a transport
//
// Transport is all a network must offer. A transport may offer more, as
// optional interfaces the Group finds by type assertion, each with its
// contract stated where it is declared:
//
//   - Flusher: the zero-copy send path. The ring sends its own and its
//     finished chunks as views of the caller's buffer (Message.Borrowed);
//     a transport that writes them to the socket after Send returns, with
//     no copy, is flushed by the Group before a collective returns.
//   - Placer: the zero-copy receive path. An all-gather payload is read
//     from the socket straight into the chunk of the caller's buffer it
//     overwrites, where the Group's placement says so.
//   - UpstreamAborter: an abort that travels against the data direction,
//     to the previous rank.
//
// What a transport needs besides (the control kinds, abort frames,
// AbortError, the payload pool, Message.Own) is exported for it and
// documented as such. Payload buffers are pooled (payloads.go), shared by
// the core and its transports.
//
// # Algorithms
//
// All-reduce is the bandwidth-optimal ring: reduce-scatter then all-gather
// over pieces of the buffer one after the other, each piece cut into n
// segments of two chunks of at most ChunkBytes, every chunk forwarded as
// soon as it is reduced so the ring is pipelined. Each rank sends 2(n-1)/n
// of the buffer whatever n is, and a piece's memory is still in cache when
// its all-gather writes it. The reduction order is fixed (segment i of a
// piece is summed starting from rank i round the ring, finished once by its
// owner and copied to the others), so every rank ends bit-identical and
// runs repeat exactly.
// Mean divides once, at the owner. FP16 compression (opt-in) halves the
// bytes and stays deterministic (package internal/float16 converts).
// Broadcast pipelines chunks along the ring from the root; Barrier passes
// a token n-1 times round the ring.
//
// # Failure model
//
// A transport reports a peer that crashes as a failed Send or Recv, and
// the news travels round the ring (abort frames, which transports put
// ahead of queued data). A peer that goes silent (stopped, hung, cut off)
// is noticed by the transport's own liveness checks, if it has any, or by
// OpTimeout, whichever comes first. With a short OpTimeout every rank may
// time out, each waiting on its predecessor; so a rank that has waited a
// while sends its successor a "waiting" notice naming the head of the
// chain of waiting ranks (its predecessor if that one has been silent for
// a third of OpTimeout, 0.2-5 s; else the head its predecessor named). A
// rank whose timer fires names that head, not its live predecessor,
// waiting up to about two silences more for one to emerge. Every such
// error is a *PeerError naming rank, host, address, collective and step.
// A Group that failed stays failed: the job is meant to stop and write its
// failure reason.
//
// Measurements (BENCHMARKS.md beside this file, and the repository's
// BENCHMARKS.md, every rank its own process on a 2-core machine): see the
// allreduce section there for the ring on lanes and on gRPC streams against
// TensorFlow's RING all-reduce and a raw TCP pump; over a 1 Gbit/s link the
// ring reaches 92% of the link.
package distributed
