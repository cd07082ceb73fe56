module github.com/tempcreds/tempcreds/tests/apps/pause

go 1.24
