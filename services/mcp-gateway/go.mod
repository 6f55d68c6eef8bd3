module github.com/mcpauthz/mcpauthz/services/mcp-gateway

go 1.26.0

replace (
	github.com/mcpauthz/mcpauthz/gen => ../../gen
	github.com/mcpauthz/mcpauthz/internal/testenv => ../../internal/testenv
)

require (
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/mcpauthz/mcpauthz/gen v0.0.0 // indirect
	github.com/mcpauthz/mcpauthz/internal/testenv v0.0.0 // indirect
	github.com/modelcontextprotocol/go-sdk v1.8.0 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/grpc v1.85.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
