module github.com/mcpauthz/mcpauthz/services/devauth

go 1.26.0

replace (
	github.com/mcpauthz/mcpauthz/gen => ../../gen
	github.com/mcpauthz/mcpauthz/internal/testenv => ../../internal/testenv
)

require (
	github.com/google/go-cmp v0.7.0
	github.com/mcpauthz/mcpauthz/internal/testenv v0.0.0-00010101000000-000000000000
	golang.org/x/oauth2 v0.38.0
)
