// fpmode.h: the floating-point mode of a thread that calls TF_SessionRun.
#ifndef SAGEFIT_FPMODE_H
#define SAGEFIT_FPMODE_H

#include <stdint.h>

// Subnormal floats: TensorFlow's pool threads run with them flushed to zero
// (its threads set FTZ and DAZ when they start), the thread that calls
// TF_SessionRun keeps them. A step whose ops run in the calling thread
// (inter_op_threads -1, the probe's choice, the single-threaded executor)
// kept subnormal Adam moments that the pool, and Keras's fit, flushed:
// the run takes the pool's mode and gives the thread its own back.
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
typedef unsigned int sagefit_fpmode;
static inline sagefit_fpmode sagefit_flush_denormals(void) {
	sagefit_fpmode old = _mm_getcsr();
	_mm_setcsr(old | 0x8040); // FTZ (bit 15) and DAZ (bit 6)
	return old;
}
static inline void sagefit_restore_fpmode(sagefit_fpmode old) { _mm_setcsr(old); }
#elif defined(__aarch64__)
typedef uint64_t sagefit_fpmode;
static inline sagefit_fpmode sagefit_flush_denormals(void) {
	sagefit_fpmode old;
	__asm__ volatile("mrs %0, fpcr" : "=r"(old));
	__asm__ volatile("msr fpcr, %0" : : "r"(old | (1ULL << 24))); // FZ
	return old;
}
static inline void sagefit_restore_fpmode(sagefit_fpmode old) { __asm__ volatile("msr fpcr, %0" : : "r"(old)); }
#else
typedef int sagefit_fpmode;
static inline sagefit_fpmode sagefit_flush_denormals(void) { return 0; }
static inline void sagefit_restore_fpmode(sagefit_fpmode old) { (void)old; }
#endif

#endif
