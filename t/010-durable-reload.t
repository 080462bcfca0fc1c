# Durable zones across nginx -s reload, including a new zone size.
use File::Temp qw(tempdir);
use Test::Nginx::Socket 'no_plan';

$ENV{TEST_NGINX_STATE_DIR} = tempdir('ngx-ticket-state-XXXXXX', TMPDIR => 1, CLEANUP => 1);

use_hup();
workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: before the reload
--- http_config
    ticket_zone t:1m state=$TEST_NGINX_STATE_DIR/t.state reserve=10;
--- config
    location = /t { ticket_counter zone=t; }
    location = /k { ticket_counter zone=t key=$arg_k; }
--- pipelined_requests eval
["GET /t", "GET /t", "GET /k?k=a"]
--- response_body eval
["1\n", "2\n", "1\n"]



=== TEST 2: same size
--- http_config
    ticket_zone t:1m state=$TEST_NGINX_STATE_DIR/t.state reserve=10;
--- config
    location = /t { ticket_counter zone=t; }
    location = /k { ticket_counter zone=t key=$arg_k; }
--- pipelined_requests eval
["GET /t", "GET /k?k=a"]
--- response_body eval
["3\n", "2\n"]



=== TEST 3: new size: carried over, still durable, well past the first reservation
--- http_config
    ticket_zone t:4m state=$TEST_NGINX_STATE_DIR/t.state reserve=10;
--- config
    location = /t { ticket_counter zone=t; }
    location = /k { ticket_counter zone=t key=$arg_k; }
--- pipelined_requests eval
[("GET /t") x 30, "GET /k?k=a"]
--- response_body eval
[(map { "$_\n" } 4 .. 33), "3\n"]
--- no_error_log
[error]
