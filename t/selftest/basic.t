# Self-test of the Test::Nginx runner: requests, status codes, headers
# and bodies against a stock nginx (core directives only).
use Test::Nginx::Socket;

repeat_each(2);
plan tests => repeat_each() * (3 * blocks() + 6);
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



=== TEST 2: chomp filter and error_code
--- config
    location = /t {
        return 201 "created";
    }
--- request
GET /t
--- error_code: 201
--- response_body chomp
created



=== TEST 3: response headers, including one that must be absent
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
