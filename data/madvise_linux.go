package data

import "syscall"

// adviseRandom tells the kernel that m is read in random order.
func adviseRandom(m []byte) { _ = syscall.Madvise(m, syscall.MADV_RANDOM) }
