// Package transport connects the hosts of one training job for package
// distributed: Join meets the other hosts over gRPC and returns a
// *distributed.Group whose collectives run on the links it set up.
//
// # What it owns, what it must not import
//
// It owns the network: the gRPC service and its frame codec (grpc.go,
// frame.go), rendezvous (rendezvous.go, join.go), the data lanes
// (lane.go), the host address list (ParseHostAddrs) and the socket side of
// the failure model. The algorithms, the Group and the message format are
// package distributed's; this package reaches them only through that
// package's exported API (Transport and the optional Flusher, Placer and
// UpstreamAborter it implements). It must not know about models or
// SageMaker, and reads no environment: the launcher (runtime/launch) owns
// every SAGEFIT_* variable and passes what it read in Config.
//
// # Links
//
// One stream per ring neighbour: a client stream to the next rank carries
// the handshake, aborts, the status a leaving host ends it with and the
// link's liveness (keepalive); the chunks themselves travel on a data lane
// beside it, one plain TCP connection per link opened right after the
// handshake with a one-time token the handshake hands out (lane.go),
// unless Config.DataOverGRPC puts them on the stream too. The lane exists
// because grpc-go's HTTP/2 framing and buffer copies, not the network,
// bounded the ring at about a quarter of raw TCP on loopback.
//
// No copies on the lane: a payload goes to the socket with one writev; the
// ring's views of the caller's buffer (distributed.Message.Borrowed) are
// written as they are, and Flush (distributed.Flusher) returns once they
// are on the wire; an all-gather payload is read from the socket straight
// into the chunk of the caller's buffer it overwrites
// (distributed.Placer).
//
// The transport's state is in two halves: rendezvous, what joining uses
// (connection attempts, the handshake slot and lane offers, why a join
// fails, farewells), and the data path, the links the Group's messages
// travel on once they exist. The identity of this rank, the sockets and
// the lifetime are shared; grpcTransport says why.
//
// # Rendezvous
//
// Join listens, connects to the next host (retrying with capped exponential
// backoff until ConnectTimeout, as SageMaker hosts boot at different times
// and names resolve late), accepts the previous host after checking its IP
// against the job's hosts and its identity (job, host list, rank, model
// fingerprint, protocol version), and runs a barrier so the whole ring is
// up before it returns. A mismatch fails Join on every host with one
// sentence naming both sides. A host that gives up joining hands its
// reason to both neighbours and waits (up to 5 s) for each to acknowledge
// before it closes anything: on the link when there is one (the neighbour
// ends the stream once it has read the reason), else as a farewell on a
// stream of its own; a host that connects meanwhile is answered with it.
// Neighbours pass it on, so it travels round the ring both ways. A host
// that sees a neighbour's connection drop during rendezvous waits (about
// 6 s) for such a reason before it reports the bare connection loss. For
// local multi-host runs, Config.Addrs maps host names to loopback
// addresses (ParseHostAddrs reads the launcher's list).
//
// # Failure model (sockets)
//
// A peer that crashes resets its connections: neighbours fail at once and
// the Group relays the news round the ring (abort frames go ahead of
// queued data; an abort can also go upstream, on the reverse direction of
// the previous rank's stream). A peer that goes silent (stopped, hung, cut
// off) is noticed by the Group's OpTimeout, or by gRPC's keepalive, whose
// bound follows it (a peer silent for less than OpTimeout is not dropped);
// an idle lane is probed by TCP keepalive. The suspect relay that names a
// silent rank when op timeouts fire first is the Group's (package
// distributed).
package transport
