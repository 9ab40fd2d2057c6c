package envoy.authz

# Allows a request whose parsed body names user alice (JSON, urlencoded or
# multipart), and any request whose body was not parsed as such.
default allow := false

allow if input.parsed_body.user == "alice"

allow if input.parsed_body.user == ["alice"]

allow if input.truncated_body

allow if count(object.get(input.parsed_body, "last", [])) == 1
