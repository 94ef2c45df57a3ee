-- wrk script for run.sh's upload test: each request POSTs a 1 MiB body (the backend answers
-- with its short text), so the bytes flow from the client through the balancer to the backend.
wrk.method = "POST"
wrk.body = string.rep("x", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
