package health

import "github.com/otagw/otagw/internal/api"

// API is the report in the local API's own type (api.HealthReport, the
// same JSON), for the daemon's answers: a client decodes it without
// importing this package.
func (r Report) API() *api.HealthReport {
	out := &api.HealthReport{OK: r.OK, Started: r.Started, Duration: r.Duration}
	for _, c := range r.Results {
		out.Results = append(out.Results, api.HealthCheck{Name: c.Name, Kind: c.Kind, Required: c.Required, OK: c.OK,
			Detail: c.Detail, Error: c.Error, Started: c.Started, Duration: c.Duration})
	}
	return out
}
