// Package launch owns every fan-out of sagefit processes and every
// SAGEFIT_* variable that ties them together (env.go):
//
//   - Processes: one training process per GPU on a host (hyperparameter
//     sagefit_processes_per_host), each a ring member of its own, the
//     members' listening sockets bound here and inherited, signals passed
//     on once, the host's failure reason picked from the workers';
//   - WorkerView: a worker's view of the job (ranks host-major);
//   - Hosts: `sagefit local --hosts N`, N hosts as processes on
//     127.0.0.1..N with their own base dirs;
//   - Containers: `sagefit local --image IMAGE`, one container of the
//     training image per host on a network of the job's own (algo-1..N).
//
// It must not import a session or the fit loop.
package launch
