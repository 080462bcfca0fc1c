# Self-test of the Test::Nginx runner: several requests per block, pipelined
# requests on one keep-alive connection, chunked and close-delimited bodies,
# raw requests and requests split into packets.
use Test::Nginx::Socket;

plan tests => 39;
no_shuffle();
run_tests();

__DATA__

=== TEST 1: several requests, one connection each; expectations are arrays
--- config
    location = /a { return 200 "A\n"; }
    location = /b { return 404 "B\n"; }
--- request eval
["GET /a", "GET /b"]
--- error_code eval
[200, 404]
--- response_body eval
["A\n", "B\n"]



=== TEST 2: pipelined requests with Content-Length bodies
--- config
    location = /t {
        add_header X-Conn $http_connection;
        return 200 "$arg_n\n";
    }
--- pipelined_requests eval
["GET /t?n=1", "GET /t?n=2", "GET /t?n=3"]
--- response_headers eval
["X-Conn: keep-alive", "X-Conn: keep-alive", "X-Conn: close"]
--- response_body eval
["1\n", "2\n", "3\n"]



=== TEST 3: chunked response (SSI drops Content-Length)
--- config
    location = /t {
        ssi on;
        ssi_types text/plain;
        return 200 'a<!--# echo var="arg_x" -->b';
    }
--- request
GET /t?x=middle
--- response_headers
Transfer-Encoding: chunked
!Content-Length
--- response_body chomp
amiddleb



=== TEST 4: pipelined chunked responses
--- config
    location = /t {
        ssi on;
        ssi_types text/plain;
        return 200 '<!--# echo var="arg_n" -->';
    }
--- pipelined_requests eval
["GET /t?n=one", "GET /t?n=two"]
--- response_body eval
["one", "two"]



=== TEST 5: HTTP/1.0 body delimited by closing the connection
--- config
    location = /t {
        ssi on;
        ssi_types text/plain;
        return 200 'x<!--# echo var="server_protocol" -->';
    }
--- request
GET /t HTTP/1.0
--- response_headers
!Content-Length
!Transfer-Encoding
--- response_body chomp
xHTTP/1.0



=== TEST 6: raw_request is sent verbatim
--- config
    location = /t {
        return 200 "$http_x_raw";
    }
--- raw_request eval
"GET /t HTTP/1.1\r\nHost: localhost\r\nX-Raw: yes\r\nConnection: close\r\n\r\n"
--- response_body: yes



=== TEST 7: raw_request in packets, split inside the headers
--- config
    location = /t {
        return 200 "$http_x_split";
    }
--- raw_request eval
["GET /t HTTP/1.1\r\nHost: localhost\r\nX-Sp", "lit: joined\r\nConnection: close\r\n\r\n"]
--- raw_request_middle_delay: 0.1
--- response_body: joined



=== TEST 8: a request body split into packets, the second one delayed
--- config
    location = /t {
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/echo;
        proxy_set_header X-Body $request_body;
    }
    location = /echo {
        return 200 "[$http_x_body] $http_content_length";
    }
--- request eval
[["POST /t\nhello", {value => " world", delay_before => 0.1}]]
--- response_body: [hello world] 11



=== TEST 9: chunked request body from more_headers is sent as is
--- config
    location = /t {
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/echo;
        proxy_set_header X-Body $request_body;
    }
    location = /echo {
        return 200 "[$http_x_body]";
    }
--- more_headers
Transfer-Encoding: chunked
--- request eval
"POST /t
5\r
hello\r
0\r
\r
"
--- response_body: [hello]



=== TEST 10: more_headers per request
--- config
    location = /t {
        return 200 "$http_x_n";
    }
--- more_headers eval
["X-N: first", "X-N: second"]
--- request eval
["GET /t", "GET /t"]
--- response_body eval
["first", "second"]



=== TEST 11: HTTP 0.9 response (no status line, no headers)
--- config
    location = /t {
        return 200 "nine";
    }
--- raw_request eval
"GET /t\r\n"
--- http09
--- response_body: nine
