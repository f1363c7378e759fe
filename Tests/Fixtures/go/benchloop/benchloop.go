// Package benchloop is the load loop the Go bench clients share: C callers
// on one connection, each calling in a loop for warmup + duration, and one
// JSON line with the calls that started and finished inside the measured
// window. The line is the one scripts/bench-rpc reads from every client.
package benchloop

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"time"
)

// Result of a run: the latencies of the calls inside the measured window.
type Result struct {
	Latencies []time.Duration // sorted
	Duration  time.Duration
}

// Run calls call from concurrency goroutines until warmup + duration have
// passed; the first error stops the run and is returned.
func Run(concurrency int, duration, warmup time.Duration, call func() error) (Result, error) {
	start := time.Now()
	measureFrom := start.Add(warmup)
	measureTo := measureFrom.Add(duration)

	latencies := make([][]time.Duration, concurrency)
	errs := make(chan error, concurrency)
	var wg sync.WaitGroup
	for g := 0; g < concurrency; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			recorded := make([]time.Duration, 0, 1<<16)
			for {
				t0 := time.Now()
				if !t0.Before(measureTo) {
					break
				}
				if err := call(); err != nil {
					errs <- err
					return
				}
				t1 := time.Now()
				// Only calls that started and finished inside the window count.
				if !t0.Before(measureFrom) && !t1.After(measureTo) {
					recorded = append(recorded, t1.Sub(t0))
				}
			}
			latencies[g] = recorded
		}(g)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return Result{}, err
	}

	var all []time.Duration
	for _, l := range latencies {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return Result{}, fmt.Errorf("no call completed inside the measured window")
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return Result{Latencies: all, Duration: duration}, nil
}

// JSON is the result as the one line scripts/bench-rpc reads.
func (r Result) JSON(impl string, payload, concurrency int) string {
	secs := r.Duration.Seconds()
	return fmt.Sprintf("{\"impl\":%q,\"payload\":%d,\"concurrency\":%d,\"calls\":%d,\"seconds\":%.3f,\"calls_per_sec\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f}",
		impl, payload, concurrency, len(r.Latencies), secs, float64(len(r.Latencies))/secs,
		micros(percentile(r.Latencies, 0.50)), micros(percentile(r.Latencies, 0.99)))
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p*float64(len(sorted)))) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(sorted) {
		rank = len(sorted) - 1
	}
	return sorted[rank]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
