package machines

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"

	"kiln/daemon/api"
)

// InstanceTypes are the built-in sizes.
var InstanceTypes = []api.InstanceType{
	{Name: "nano", CPUs: 1, MemoryMiB: 256},
	{Name: "micro", CPUs: 1, MemoryMiB: 512},
	{Name: "small", CPUs: 1, MemoryMiB: 1024},
	{Name: "medium", CPUs: 2, MemoryMiB: 2048},
	{Name: "large", CPUs: 2, MemoryMiB: 4096},
}

const defaultInstanceType = "micro"

// hostLimits is what one instance may have here: the host's CPUs and memory.
func hostLimits() (cpus, memoryMiB int) {
	cpus = runtime.NumCPU()
	memoryMiB = 1 << 20
	if f, err := os.Open("/proc/meminfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				if kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB"))); err == nil {
					memoryMiB = kb / 1024
				}
			}
		}
	}
	return cpus, memoryMiB
}

// Size picks the instance's size from the request: a type, or cpus and memory (each
// defaulting to the default type's), checked against the host.
func Size(req api.RunInstancesRequest) (typ string, cpus, mem int, err error) {
	t := req.InstanceType
	if t == "" && req.CPUs == nil && req.MemoryMiB == nil {
		t = defaultInstanceType
	}
	if t != "" {
		if req.CPUs != nil || req.MemoryMiB != nil {
			return "", 0, 0, fmt.Errorf("give an instance type or --cpus/--memory, not both: %w", errdefs.ErrInvalidArgument)
		}
		for _, it := range InstanceTypes {
			if it.Name == t {
				cpus, mem = it.CPUs, it.MemoryMiB
			}
		}
		if cpus == 0 {
			var names []string
			for _, it := range InstanceTypes {
				names = append(names, fmt.Sprintf("%s (%d vCPU, %d MiB)", it.Name, it.CPUs, it.MemoryMiB))
			}
			return "", 0, 0, fmt.Errorf("instance type %q: want one of %s: %w", t, strings.Join(names, ", "), errdefs.ErrInvalidArgument)
		}
	} else {
		for _, it := range InstanceTypes {
			if it.Name == defaultInstanceType {
				cpus, mem = it.CPUs, it.MemoryMiB
			}
		}
		if req.CPUs != nil {
			cpus = *req.CPUs
		}
		if req.MemoryMiB != nil {
			mem = *req.MemoryMiB
		}
	}
	hostCPUs, hostMem := hostLimits()
	switch {
	case cpus < 1 || cpus > hostCPUs:
		return "", 0, 0, fmt.Errorf("%d vCPUs: this host has %d; give 1 to %d: %w", cpus, hostCPUs, hostCPUs, errdefs.ErrInvalidArgument)
	case mem < 64 || mem > hostMem:
		return "", 0, 0, fmt.Errorf("%d MiB of memory: give 64 MiB to %d MiB (this host's memory): %w", mem, hostMem, errdefs.ErrInvalidArgument)
	}
	return t, cpus, mem, nil
}
