package qemutest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

const reportCaseEnv = "QEMUTEST_REPORT_CASE"

// reportCases are console transcripts and what report must make of them.
var reportCases = map[string]struct {
	console  string
	expect   map[string]string
	wantFail bool
	want     string // in the output of the run
}{
	"all-pass": {
		console: "OTAGW-QEMU-INIT\n=== RUN   TestA\n--- PASS: TestA (0.00s)\nOTAGW-QEMU-EXIT 0\n",
		want:    "--- PASS: TestReport/TestA",
	},
	"unexpected-skip": {
		console: "OTAGW-QEMU-INIT\n=== RUN   TestA\n    a_test.go:3: no device\n--- SKIP: TestA (0.00s)\n" +
			"[   22.279801] reboot: Power down\nOTAGW-QEMU-EXIT 0\n",
		wantFail: true,
		want:     "guest test TestA (boot 1) skipped inside the guest: a_test.go:3: no device;",
	},
	"unexpected-subtest-skip": {
		console: "OTAGW-QEMU-INIT\n=== RUN   TestA\n=== RUN   TestA/x\n    a_test.go:3: no x\n" +
			"--- PASS: TestA (0.00s)\n    --- SKIP: TestA/x (0.00s)\nOTAGW-QEMU-EXIT 0\n",
		wantFail: true,
		want:     "guest test TestA/x (boot 1) skipped inside the guest",
	},
	"expected-skip": {
		console: "OTAGW-QEMU-INIT\n=== RUN   TestA\n    a_test.go:3: no device\n--- SKIP: TestA (0.00s)\nOTAGW-QEMU-EXIT 0\n",
		expect:  map[string]string{"TestA": "the guest has no such device"},
		want:    "skipped as expected (the guest has no such device): a_test.go:3: no device",
	},
	"expected-skip-that-ran": {
		console:  "OTAGW-QEMU-INIT\n=== RUN   TestA\n--- PASS: TestA (0.00s)\nOTAGW-QEMU-EXIT 0\n",
		expect:   map[string]string{"TestA": "the guest has no such device"},
		wantFail: true,
		want:     "guest test TestA is listed in ExpectSkips (the guest has no such device) but did not skip",
	},
	"skip-before-reset": {
		console: "OTAGW-QEMU-INIT\n=== RUN   TestA\n    a_test.go:3: later\n--- SKIP: TestA (0.00s)\n=== RUN   TestB\n" +
			"OTAGW-QEMU-INIT\n=== RUN   TestB\n--- PASS: TestB (0.00s)\nOTAGW-QEMU-EXIT 0\n",
		wantFail: true,
		want:     "guest test TestA (boot 1) skipped inside the guest",
	},
	"fail-before-reset": {
		console: "OTAGW-QEMU-INIT\n=== RUN   TestA\n    a_test.go:9: boom\n--- FAIL: TestA (0.00s)\n=== RUN   TestB\n" +
			"OTAGW-QEMU-INIT\n=== RUN   TestB\n--- PASS: TestB (0.00s)\nOTAGW-QEMU-EXIT 0\n",
		wantFail: true,
		want:     "guest test TestA failed on boot 1 (before a reset)",
	},
	"unfinished-before-reset": {
		console: "OTAGW-QEMU-INIT\n=== RUN   TestB\n    b_test.go:1: resetting\n" +
			"OTAGW-QEMU-INIT\n=== RUN   TestB\n--- PASS: TestB (0.00s)\nOTAGW-QEMU-EXIT 0\n",
		want: "boot 1: TestB (unfinished: the machine reset)",
	},
}

// TestReport runs report on each canned transcript in a child process (a
// failing report fails the test it is given) and checks the verdict.
func TestReport(t *testing.T) {
	if name := os.Getenv(reportCaseEnv); name != "" {
		tc, ok := reportCases[name]
		if !ok {
			t.Fatalf("no report case %q", name)
		}
		res := &Result{Output: tc.console, Tests: ParseTestOutput(tc.console)}
		report(t, Config{TestPkg: "./x", ExpectSkips: tc.expect}, res)
		return
	}
	t.Parallel()
	for name, tc := range reportCases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run", "^TestReport$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), reportCaseEnv+"="+name)
			out, err := cmd.CombinedOutput()
			if failed := err != nil; failed != tc.wantFail {
				t.Errorf("report failed = %v (%v); want %v\n%s", failed, err, tc.wantFail, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, out)
			}
		})
	}
}

func TestCheckBoots(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		want, got int
		ok        bool
	}{{0, 1, true}, {0, 3, true}, {2, 2, true}, {2, 1, false}, {3, 2, false}} {
		err := checkBoots(Config{Boots: tc.want}, &Result{Boots: tc.got})
		if (err == nil) != tc.ok {
			t.Errorf("checkBoots(Boots %d, booted %d) = %v; want ok=%v", tc.want, tc.got, err, tc.ok)
		}
	}
}
