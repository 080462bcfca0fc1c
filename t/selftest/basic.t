# Self-test of the Test::Nginx runner (see scripts/prove-nginx): requests,
# status codes, headers and bodies against a stock nginx, core directives only.
#
#   TEST_NGINX_BINARY=/usr/sbin/nginx TEST_NGINX_LOAD_MODULES= \
#       scripts/prove-nginx t/selftest/
use Test::Nginx::Socket;

repeat_each(2);
plan tests => repeat_each() * 42;
no_shuffle();
run_tests();

__DATA__

=== TEST 1: plain body, default status 200
--- config
    location = /t {
        return 200 "hello\n";
    }
--- request
    GET /t
--- response_body
hello



=== TEST 2: chomp filter, error_code, error_code_like
--- config
    location = /t {
        return 201 "created";
    }
--- request
# comment lines before the request line are skipped
GET /t
--- error_code: 201
--- response_body chomp
created



=== TEST 3: error_code_like
--- config
    location = /t {
        return 418 "teapot 418";
    }
--- request
GET /t
--- error_code_like: ^4\d\d$
--- response_body_like: 418



=== TEST 4: response headers, repeated header, absent header
--- config
    location = /t {
        add_header X-Foo "bar";
        add_header X-Multi a;
        add_header X-Multi b;
        return 200 "ok";
    }
--- request
GET /t
--- response_headers
X-Foo: bar
X-Multi: a, b
!X-Missing
--- response_body: ok



=== TEST 5: response_headers_like and raw_response_headers_like
--- config
    location = /t {
        add_header X-Num 12345;
        return 200 "ok";
    }
--- request
GET /t
--- response_headers_like
X-Num: \d+
Content-Type: text/.*
--- raw_response_headers_like: ^HTTP/1\.1 200 OK\r\n
--- response_body_unlike: ^$



=== TEST 6: more_headers and the automatic Host/Connection headers
--- config
    location = /t {
        return 200 "foo=$http_x_foo host=$host conn=$http_connection\n";
    }
--- more_headers
X-Foo: some value
--- request
GET /t
--- response_body
foo=some value host=localhost conn=close



=== TEST 7: request body gets a Content-Length, HTTP version is kept
--- config
    location = /t {
        return 200 "$request_method $server_protocol len=$http_content_length\n";
    }
--- request
POST /t HTTP/1.0
hello world
--- response_body
POST HTTP/1.0 len=11



=== TEST 8: request eval with escapes; body reaches nginx intact
--- config
    location = /t {
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/echo;
        proxy_set_header X-Body $request_body;
    }
    location = /echo {
        return 200 "[$http_x_body]";
    }
--- request eval
"POST /t\n\tab\tc  \n"
--- response_body: [ab	c]



=== TEST 9: limit_except rejects other methods
--- config
    location = /t {
        limit_except GET {
            deny all;
        }
        return 200 "ok";
    }
--- request
DELETE /t
--- error_code: 403
--- response_body_like: 403 Forbidden



=== TEST 10: HEAD request: no body despite Content-Length
--- config
    location = /t {
        return 200 "some body";
    }
--- request
HEAD /t
--- response_headers
Content-Length: 9
--- response_body



=== TEST 11: $ServerPort and $TEST_NGINX_* in expectations
--- config
    location = /t {
        return 200 "port $server_port";
    }
--- request
GET /t
--- response_body chomp
port $ServerPort



=== TEST 12: response_body eval with a regex
--- config
    location = /t {
        return 200 "abc 123 xyz";
    }
--- request
GET /t
--- response_body eval
qr/^abc \d+ xyz$/



=== TEST 13: response_body with a TEST_NGINX variable
--- config
    location = /t {
        return 200 "$server_port\n";
    }
--- request
GET /t
--- response_body
$TEST_NGINX_SERVER_PORT



=== TEST 14: a skipped block
--- config
    location = /t {
        return 500;
    }
--- request
GET /t
--- SKIP



=== TEST 15: skip_eval skips the given number of tests
--- config
    location = /t {
        return 500;
    }
--- request
GET /t
--- skip_eval: 2: 1
--- response_body: never checked



=== TEST 16: skip_nginx: versions older than 0.1.0 are skipped, so it runs
--- config
    location = /t {
        return 200 "ran";
    }
--- request
GET /t
--- skip_nginx: 2: < 0.1.0
--- response_body: ran



=== TEST 17: a static file from the default root location
--- config
--- request
GET /index.html
--- response_body: <html><head><title>It works!</title></head><body>It works!</body></html>



=== TEST 18: no --- config: reuses the previous block's server
--- request
GET /index.html
--- response_body_like: It works!



=== TEST 19: client side timeout with --- abort is not a failure
--- config
    location = /t {
        return 200 "ok";
    }
--- raw_request eval
"GET /t HTTP/1.1\r\nHost: localhost\r\n"
--- timeout: 300ms
--- abort
--- ignore_response
--- no_error_log
[error]
