package stm32sim

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Faults are the line and device faults the simulator injects.
type Faults struct {
	// NACK is the probability that an ACK the bootloader would send is
	// replaced by a NACK (the operation is then not performed).
	NACK float64 `json:"nack,omitempty"`
	// CorruptPerKiB is the expected number of corrupted bytes per KiB on
	// the wire, in either direction (each byte XORed with a random non-zero value).
	CorruptPerKiB float64 `json:"corrupt_per_kib,omitempty"`
	// DropPerKiB is the expected number of host bytes per KiB that never
	// reach the bootloader.
	DropPerKiB float64 `json:"drop_per_kib,omitempty"`
	// Delay is added before every reply.
	Delay time.Duration `json:"delay,omitempty"`
	// DisconnectAfter: after this many host bytes the device drops off the
	// line once: the command in progress is lost, input in flight is
	// discarded, and the bootloader restarts and waits for 0x7F again (a
	// brown-out, or a cable glitch that pulses NRST). 0 = never.
	DisconnectAfter int64 `json:"disconnect_after,omitempty"`
}

// ParseFaults parses "nack=0.05,corrupt-per-kib=1,drop-per-kib=0.5,delay=2ms,disconnect-after=4000".
// "drop" is accepted as a per-byte probability.
func ParseFaults(s string) (Faults, error) {
	var f Faults
	if strings.TrimSpace(s) == "" {
		return f, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return f, fmt.Errorf("fault %q: want key=value", kv)
		}
		var err error
		switch k {
		case "nack":
			f.NACK, err = prob(v)
		case "corrupt-per-kib":
			f.CorruptPerKiB, err = strconv.ParseFloat(v, 64)
		case "drop-per-kib":
			f.DropPerKiB, err = strconv.ParseFloat(v, 64)
		case "drop":
			var p float64
			p, err = prob(v)
			f.DropPerKiB = p * 1024
		case "delay":
			f.Delay, err = time.ParseDuration(v)
		case "disconnect-after":
			f.DisconnectAfter, err = strconv.ParseInt(v, 0, 64)
		default:
			return f, fmt.Errorf("fault %q: unknown key (nack, corrupt-per-kib, drop, drop-per-kib, delay, disconnect-after)", k)
		}
		if err != nil {
			return f, fmt.Errorf("fault %s: %w", k, err)
		}
	}
	if f.CorruptPerKiB < 0 || f.DropPerKiB < 0 || f.Delay < 0 || f.DisconnectAfter < 0 {
		return f, fmt.Errorf("faults %q: negative value", s)
	}
	return f, nil
}

func prob(v string) (float64, error) {
	p, err := strconv.ParseFloat(v, 64)
	if err == nil && (p < 0 || p > 1) {
		err = fmt.Errorf("%v is not a probability in [0,1]", p)
	}
	return p, err
}
