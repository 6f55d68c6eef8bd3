module github.com/mcpauthz/mcpauthz/internal/ratelog

go 1.26
