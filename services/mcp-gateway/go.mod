module github.com/mcpauthz/mcpauthz/services/mcp-gateway

go 1.26.0

replace (
	github.com/mcpauthz/mcpauthz/gen => ../../gen
	github.com/mcpauthz/mcpauthz/internal/testenv => ../../internal/testenv
)

require (
	github.com/google/go-cmp v0.7.0
	github.com/modelcontextprotocol/go-sdk v1.8.0
	github.com/segmentio/encoding v0.5.4
)

require (
	github.com/segmentio/asm v1.1.3 // indirect
	golang.org/x/oauth2 v0.37.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
)
