# The ticket_counter handler: ordering, headers, methods, request bodies.
#
# Every file also runs with TEST_NGINX_USE_HUP=1, where nginx is reloaded,
# not restarted, between blocks and keeps the counters of every zone that
# stays declared. So a block that counts from a fresh counter declares zones
# no other block of its file declares (t1, t2, ... after the block), and at
# most one block per file uses ticket_default. See t/README.md.
use Test::Nginx::Socket 'no_plan';

workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: tickets start at 1 and go up by one
--- http_config
    ticket_zone t1:1m;
--- config
    location = /t {
        ticket_counter zone=t1;
    }
--- pipelined_requests eval
["GET /t", "GET /t", "GET /t"]
--- response_body eval
["1\n", "2\n", "3\n"]
--- no_error_log
[error]



=== TEST 2: response headers
--- http_config
    ticket_zone t2:1m;
--- config
    location = /t {
        ticket_counter zone=t2;
    }
--- request
GET /t
--- error_code: 200
--- response_headers
Content-Type: text/plain
Cache-Control: no-store
Content-Length: 2
--- response_body
1



=== TEST 3: ticket_counter alone uses the default zone
--- config
    location = /t {
        ticket_counter;
    }
--- pipelined_requests eval
["GET /t", "GET /t"]
--- response_body eval
["1\n", "2\n"]



=== TEST 4: locations on one zone share its counter; zones are separate
--- http_config
    ticket_zone a:1m;
    ticket_zone b:1m;
--- config
    location = /a1 { ticket_counter zone=a; }
    location = /a2 { ticket_counter zone=a; }
    location = /b { ticket_counter zone=b; }
--- pipelined_requests eval
["GET /a1", "GET /a2", "GET /b", "GET /a1"]
--- response_body eval
["1\n", "2\n", "1\n", "3\n"]



=== TEST 5: HEAD answers the headers and takes no ticket
--- http_config
    ticket_zone t5:1m;
--- config
    location = /t {
        ticket_counter zone=t5;
    }
--- request eval
["HEAD /t", "HEAD /t", "GET /t"]
--- error_code eval
[200, 200, 200]
--- response_headers eval
["Content-Type: text/plain\nCache-Control: no-store", "Content-Type: text/plain", "Content-Type: text/plain"]
--- response_body eval
["", "", "1\n"]



=== TEST 6: other methods get 405 with Allow, and take no ticket
--- http_config
    ticket_zone t6:1m;
--- config
    location = /t {
        ticket_counter zone=t6;
    }
--- request eval
["DELETE /t", "PUT /t\nbody", "OPTIONS /t", "GET /t"]
--- error_code eval
[405, 405, 405, 200]
--- response_headers eval
["Allow: GET, HEAD, POST", "Allow: GET, HEAD, POST", "Allow: GET, HEAD, POST", "!Allow"]
--- response_body eval
["method not allowed\n", "method not allowed\n", "method not allowed\n", "1\n"]



=== TEST 7: POST takes a ticket; bodies are read away on keep-alive
--- http_config
    ticket_zone t7:1m;
--- config
    location = /t {
        ticket_counter zone=t7;
    }
--- pipelined_requests eval
["POST /t\nhello", "POST /t\n" . ("x" x 200000), "GET /t", "POST /t\n" . ("y" x 5000), "GET /t"]
--- response_body eval
["1\n", "2\n", "3\n", "4\n", "5\n"]
--- no_error_log
[error]



=== TEST 8: a chunked POST body is read away too
--- http_config
    ticket_zone t8:1m;
--- config
    location = /t {
        ticket_counter zone=t8;
    }
--- raw_request eval
"POST /t HTTP/1.1\r
Host: localhost\r
Transfer-Encoding: chunked\r
Connection: close\r
\r
5\r
hello\r
0\r
\r
"
--- response_body
1



=== TEST 9: a 405 after a large body keeps the connection usable
--- http_config
    ticket_zone t9:1m;
--- config
    location = /t {
        ticket_counter zone=t9;
    }
--- pipelined_requests eval
["PUT /t\n" . ("z" x 100000), "GET /t"]
--- error_code eval
[405, 200]
--- response_body eval
["method not allowed\n", "1\n"]
