package health

import (
	"encoding/json"
	"testing"
	"time"
)

// The API type carries the report unchanged: the same JSON.
func TestReportAPIJSON(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 14, 3, 7, 5, time.UTC)
	for _, r := range []Report{
		{},
		{OK: true, Started: t0, Duration: 1500 * time.Millisecond, Results: []Result{
			{Name: "bus", Kind: "unit", Required: true, OK: true, Detail: "active", Started: t0, Duration: time.Millisecond},
			{Name: "app", Kind: "http", OK: false, Error: "connection refused\nretried", Started: t0.Add(time.Second), Duration: 3 * time.Second},
		}},
	} {
		want, _ := json.Marshal(r)
		got, err := json.Marshal(r.API())
		if err != nil || string(got) != string(want) {
			t.Errorf("API JSON:\n%s\nwant:\n%s", got, want)
		}
	}
}
