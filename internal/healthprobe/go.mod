module github.com/mcpauthz/mcpauthz/internal/healthprobe

go 1.26
