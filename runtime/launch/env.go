package launch

// The variables that tie sagefit's processes together, every one of them.
// The launcher sets them for the processes it starts; nothing else of
// sagefit defines one (SageMaker's own SM_* names belong to package
// runtime/sagemaker).
const (
	// EnvWorker marks a process as one of several training processes on
	// its host (one per GPU), started by the host's launcher: "k/P" is
	// worker k (0-based) of P.
	EnvWorker = "SAGEFIT_WORKER"
	// EnvHostAddrs maps host (or ring member) names to addresses,
	// "algo-1=127.0.0.1:7001,algo-2=127.0.0.2:7001", for hosts whose names
	// do not resolve: local multi-host runs, workers of one host.
	EnvHostAddrs = "SAGEFIT_HOST_ADDRS"
	// EnvListenFD is the inherited socket a process's ring member listens
	// on, bound by its launcher (a host's, for its workers; `sagefit local
	// --hosts`, for each host, not yet listening), so a port in use fails
	// before any process starts and none can be taken meanwhile
	// (ListenInherited).
	EnvListenFD = "SAGEFIT_LISTEN_FD"
	// EnvFailureFile is where a worker writes its failure reason; the
	// launcher picks the host's.
	EnvFailureFile = "SAGEFIT_FAILURE_FILE"
)
