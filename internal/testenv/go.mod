module github.com/mcpauthz/mcpauthz/internal/testenv

go 1.26
