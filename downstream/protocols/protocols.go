// Package protocols links in every built-in downstream protocol, so that
// downstream.Lookup finds them by the names devices use in the config.
// Import it for its side effect where a fleet is configured or run
// (internal/config does); the fan-out engine itself never imports a
// protocol.
//
//	import _ "github.com/otagw/otagw/downstream/protocols"
//	p, err := downstream.Lookup("stm32-rom")
package protocols

import (
	_ "github.com/otagw/otagw/downstream/esp32" // esp32-rom
	_ "github.com/otagw/otagw/downstream/stm32" // stm32-rom
)
