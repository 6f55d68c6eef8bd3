module github.com/mcpauthz/mcpauthz/internal

go 1.26.0
