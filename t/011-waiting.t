# Requests that wait: a durable zone's request waits for its reservation to
# reach the disk. nginx may end such a request in many ways while it waits;
# none of them may leave anything pointing at it (no crash, clean under
# valgrind), and the worker goes on answering. The scenarios hold the state
# directory's lock to keep requests waiting (see t/lib/Parked.pm).
use lib 't/lib';
use File::Temp qw(tempdir);
use Test::Nginx::Socket 'no_plan';
use Parked;

$ENV{TEST_NGINX_STATE_DIR} = tempdir('ngx-ticket-wait-XXXXXX', TMPDIR => 1, CLEANUP => 1);

workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: a bad chunked body while the request waits
--- http_config
    ticket_zone w1:1m state=$TEST_NGINX_STATE_DIR/w1.state reserve=10;
--- config
    location = /t { ticket_counter zone=w1; }
    location = /seat { ticket_counter zone=w1 key=$arg_k; }
--- request
GET /t
--- response_body
1
--- parked: chunked
--- parked_dir: $TEST_NGINX_STATE_DIR
--- parked_uri: /seat?k=
--- timeout: 20



=== TEST 2: a graceful quit with worker_shutdown_timeout while requests wait
--- main_config
    worker_shutdown_timeout 1s;
--- http_config
    ticket_zone w2:1m state=$TEST_NGINX_STATE_DIR/w2.state reserve=10;
--- config
    location = /t { ticket_counter zone=w2; }
    location = /seat { ticket_counter zone=w2 key=$arg_k; }
--- request
GET /t
--- response_body
1
--- parked: quit
--- parked_dir: $TEST_NGINX_STATE_DIR
--- parked_uri: /seat?k=
--- timeout: 20



=== TEST 3: a client that leaves while its request waits
--- http_config
    ticket_zone w3:1m state=$TEST_NGINX_STATE_DIR/w3.state reserve=10;
--- config
    location = /t { ticket_counter zone=w3; }
    location = /seat { ticket_counter zone=w3 key=$arg_k; }
--- request
GET /t
--- response_body
1
--- parked: gone
--- parked_dir: $TEST_NGINX_STATE_DIR
--- parked_uri: /seat?k=
--- timeout: 20



=== TEST 4: the deadline: 500 after 5 s, then tickets again
--- http_config
    ticket_zone w4:1m state=$TEST_NGINX_STATE_DIR/w4.state reserve=10;
--- config
    location = /t { ticket_counter zone=w4; }
    location = /seat { ticket_counter zone=w4 key=$arg_k; }
--- request
GET /t
--- response_body
1
--- parked: deadline
--- parked_dir: $TEST_NGINX_STATE_DIR
--- parked_uri: /seat?k=
--- timeout: 20
--- error_log
no reservation on disk after 5000 ms
