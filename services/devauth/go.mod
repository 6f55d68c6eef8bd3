module github.com/mcpauthz/mcpauthz/services/devauth

go 1.26.0

replace (
	github.com/mcpauthz/mcpauthz/gen => ../../gen
	github.com/mcpauthz/mcpauthz/internal => ../../internal
)

require (
	github.com/google/go-cmp v0.7.0
	golang.org/x/oauth2 v0.38.0
)

require (
	github.com/mcpauthz/mcpauthz/internal v0.0.0-00010101000000-000000000000
	go.yaml.in/yaml/v3 v3.0.6
)

require (
	github.com/caarlos0/env/v11 v11.4.2 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/redis/go-redis/v9 v9.23.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
)

require (
	github.com/modelcontextprotocol/go-sdk v1.8.0
	github.com/segmentio/asm v1.1.3 // indirect
	github.com/segmentio/encoding v0.5.4 // indirect
	golang.org/x/sys v0.48.0 // indirect
)
