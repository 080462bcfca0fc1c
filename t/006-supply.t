# max= (a finite supply), batch= (?count=K), format=, width=.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use TicketLoad;

workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: max= stops at the limit with 410
--- http_config
    ticket_zone t1:1m;
--- config
    location = /t { ticket_counter zone=t1 max=3; }
--- pipelined_requests eval
["GET /t", "GET /t", "GET /t", "GET /t", "GET /t"]
--- error_code eval
[200, 200, 200, 410, 410]
--- response_body eval
["1\n", "2\n", "3\n", "sold out\n", "sold out\n"]



=== TEST 2: start= with max=, per key
--- http_config
    ticket_zone t2:1m;
--- config
    location = /k { ticket_counter zone=t2 key=$arg_k start=10 max=11; }
--- pipelined_requests eval
["GET /k?k=a", "GET /k?k=a", "GET /k?k=a", "GET /k?k=b"]
--- error_code eval
[200, 200, 410, 200]
--- response_body eval
["10\n", "11\n", "sold out\n", "10\n"]



=== TEST 3: with max=20 and many concurrent clients exactly 20 tickets are issued
--- http_config
    ticket_zone t3:1m;
--- config
    location = /t {
        ticket_counter zone=t3 max=20;
        add_header X-Worker $pid always;
    }
--- request
GET /t
--- response_body
1
--- concurrent_load: 8 5 20 /t
--- concurrent_tickets: 1..20
--- concurrent_refusals: 410



=== TEST 4: batches take consecutive tickets
--- http_config
    ticket_zone t4:1m;
--- config
    location = /b { ticket_counter zone=t4 batch=5; }
--- pipelined_requests eval
["GET /b?count=3", "GET /b", "GET /b?count=5", "GET /b?count=1"]
--- response_body eval
["1 3\n", "4\n", "5 9\n", "10 10\n"]



=== TEST 5: a bad count is 400 and takes nothing
--- http_config
    ticket_zone t5:1m;
--- config
    location = /b { ticket_counter zone=t5 batch=5; }
--- pipelined_requests eval
["GET /b?count=0", "GET /b?count=6", "GET /b?count=x", "GET /b?count=", "GET /b?count=2"]
--- error_code eval
[400, 400, 400, 400, 200]
--- response_body eval
["bad count\n", "bad count\n", "bad count\n", "bad count\n", "1 2\n"]



=== TEST 6: a batch over max= is 410 and takes nothing
--- http_config
    ticket_zone t6:1m;
--- config
    location = /b { ticket_counter zone=t6 batch=5 max=4; }
--- pipelined_requests eval
["GET /b?count=3", "GET /b?count=2", "GET /b?count=1", "GET /b"]
--- error_code eval
[200, 410, 200, 410]
--- response_body eval
["1 3\n", "sold out\n", "4 4\n", "sold out\n"]



=== TEST 7: concurrent batches never overlap
--- http_config
    ticket_zone t7:1m;
--- config
    location = /b {
        ticket_counter zone=t7 batch=10;
        add_header X-Worker $pid;
    }
--- request
GET /b?count=7
--- response_body
1 7
--- concurrent_load: 6 5 20 /b?count=7
--- concurrent_tickets: 1..4207
--- concurrent_workers: 2



=== TEST 8: JSON
--- http_config
    ticket_zone t8:1m;
--- config
    location = /j { ticket_counter zone=t8 format=json batch=3; }
--- pipelined_requests eval
["GET /j", "GET /j?count=3"]
--- response_headers eval
["Content-Type: application/json", "Content-Type: application/json"]
--- response_body eval
["{\"ticket\":1}", "{\"first\":2,\"last\":4,\"count\":3}"]



=== TEST 9: width= zero-pads text
--- http_config
    ticket_zone t9:1m;
--- config
    location = /w { ticket_counter zone=t9 width=10 start=42 batch=2; }
--- pipelined_requests eval
["GET /w", "GET /w?count=2"]
--- response_body eval
["0000000042\n", "0000000043 0000000044\n"]



=== TEST 10: parameter errors
--- config
    location = /t { ticket_counter batch=0; }
--- request
GET /t
--- must_die
--- error_log
invalid value "batch=0" in "ticket_counter" directive, it must be between 1 and 1000000



=== TEST 11: max below start
--- config
    location = /t { ticket_counter start=5 max=4; }
--- request
GET /t
--- must_die
--- error_log
"max=4" is less than "start=5" in "ticket_counter" directive



=== TEST 12: bad format and width
--- config
    location = /t { ticket_counter format=xml; }
    location = /u { ticket_counter width=21; }
--- request
GET /t
--- must_die
--- error_log
invalid value "format=xml" in "ticket_counter" directive
