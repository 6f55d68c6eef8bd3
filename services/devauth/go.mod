module github.com/mcpauthz/mcpauthz/services/devauth

go 1.26.0

replace (
	github.com/mcpauthz/mcpauthz/gen => ../../gen
	github.com/mcpauthz/mcpauthz/internal/testenv => ../../internal/testenv
)

require (
	github.com/google/go-cmp v0.7.0
	golang.org/x/oauth2 v0.38.0
)
