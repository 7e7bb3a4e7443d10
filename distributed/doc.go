// Package distributed is sagefit's data-parallel communication: collectives
// over the hosts of one training job, with no knowledge of models or
// SageMaker.
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
// tests) and gRPC (Join), one stream per ring neighbour. The gRPC stream
// carries the handshake, aborts, the status a leaving host ends it with and
// the link's liveness (keepalive); the chunks themselves travel on a data
// lane beside it, one plain TCP connection per link opened right after the
// handshake with a one-time token the handshake hands out (lane.go), unless
// Config.DataOverGRPC puts them on the stream too. The lane exists because
// grpc-go's HTTP/2 framing and buffer copies, not the network, bounded the
// ring at about a quarter of raw TCP on loopback.
//
// No copies on the lane: a payload goes to the socket with one writev; the
// ring sends its own and its finished chunks as views of the caller's
// buffer (Message.Borrowed; the Group flushes the transport before an op
// returns), and an all-gather payload is read from the socket straight
// into the chunk of the caller's buffer it overwrites (Group.place).
// Payload buffers that are needed are pooled (payloads.go).
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
// bytes and stays deterministic. Broadcast pipelines chunks along the ring
// from the root; Barrier passes a token n-1 times round the ring.
//
// # Rendezvous
//
// Join listens, connects to the next host (retrying with capped exponential
// backoff until ConnectTimeout, as SageMaker hosts boot at different times
// and names resolve late), accepts the previous host after checking its IP
// against the job's hosts and its identity (job, host list, rank, model
// fingerprint), and runs a barrier so the whole ring is up before it
// returns. A mismatch fails Join on every host with one sentence naming both
// sides. A host that gives up joining hands its reason to both neighbours
// and waits (up to 5 s) for each to acknowledge before it closes anything:
// on the link when there is one (the neighbour ends the stream once it has
// read the reason), else as a farewell on a stream of its own; a host that
// connects meanwhile is answered with it. Neighbours pass it on, so it
// travels round the ring both ways. A host that sees a neighbour's
// connection drop during rendezvous waits (about 6 s) for such a reason
// before it reports the bare connection loss. For local multi-host runs,
// EnvHostAddrs/ParseHostAddrs map host names to loopback addresses.
//
// # Failure model
//
// A peer that crashes resets its connections: neighbours fail at once and
// the news travels round the ring (abort frames go ahead of queued data). A
// peer that goes silent (stopped, hung, cut off) is noticed by the
// receiving side's keepalive (about 5 s) or by OpTimeout, whichever comes
// first. With a short OpTimeout every rank may time out, each waiting on
// its predecessor; so a rank that has waited a while sends its successor a
// "waiting" notice naming the head of the chain of waiting ranks (its
// predecessor if that one has been silent for a third of OpTimeout, 0.2-5
// s; else the head its predecessor named). A rank whose timer fires names
// that head, not its live predecessor, waiting up to about two silences
// more for one to emerge. Every such error is a *PeerError naming rank,
// host, address, collective and step. A Group that failed stays failed: the
// job is meant to stop and write its failure reason.
//
// Measurements (BENCHMARKS.md beside this file, and the repository's
// BENCHMARKS.md, every rank its own process on a 2-core machine): see the
// allreduce section there for the ring on lanes and on gRPC streams against
// TensorFlow's RING all-reduce and a raw TCP pump; over a 1 Gbit/s link the
// ring reaches 92% of the link.
package distributed
