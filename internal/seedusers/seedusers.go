// Package seedusers names the demo users devauth seeds when no users file is
// given (DEVAUTH_USERS_FILE), so that devauth, every test and the load tool
// refer to them in one place. The passwords are public: devauth is a demo and
// test server.
package seedusers

// Alice is an admin of the Acme organization.
const (
	AliceID       = "8a1f0c2e-6b1d-4c55-9d3a-2f7e1b6a9c01"
	AliceEmail    = "alice@example.com"
	AlicePassword = "alice-password"
)

// Bob belongs to no organization.
const (
	BobID       = "5d7c3b9a-2e4f-4a61-8b0c-7d9e1f2a3b4c"
	BobEmail    = "bob@example.com"
	BobPassword = "bob-password"
)

// Acme is Alice's organization.
const (
	AcmeOrgID   = "0f2b8f0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
	AcmeOrgName = "Acme"
)
