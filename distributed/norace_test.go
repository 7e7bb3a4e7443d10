//go:build !race

package distributed

// raceDetector says whether the tests run under -race.
const raceDetector = false
