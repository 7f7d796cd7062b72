package fanout

import _ "github.com/otagw/otagw/downstream/protocols" // the engine finds protocols by name
