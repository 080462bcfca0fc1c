# ticket_admin: look at a counter, move it forward, retire it; idle expiry;
# create=off. Every block uses zones of its own (HUP mode reloads between
# blocks and keeps same-named zones). check_accum_error_log(): TEST 16's
# pipelined requests check the error log after each response, for a notice
# logged when nginx started.
use lib 't/lib';
use File::Temp qw(tempdir);
use Test::Nginx::Socket 'no_plan';
use Steps;

$ENV{TEST_NGINX_STATE_DIR} = tempdir('ngx-ticket-admin-XXXXXX', TMPDIR => 1, CLEANUP => 1);

check_accum_error_log();
workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: GET shows a counter as JSON; an unknown key is 404
--- http_config
    ticket_zone ad1:1m;
--- config
    location = /t { ticket_counter zone=ad1 key=$arg_k start=10 max=99; }
    location = /admin { ticket_admin zone=ad1; }
--- pipelined_requests eval
["GET /t?k=gala", "GET /t?k=gala", "GET /admin?key=gala", "GET /admin?key=nope", "GET /admin"]
--- response_headers eval
["", "", "Content-Type: application/json", "Content-Type: application/json", ""]
--- error_code eval
[200, 200, 200, 404, 200]
--- response_body_like eval
[qr/^10\n/, qr/^11\n/,
 qr/^\{"key":"gala","start":10,"issued":2,"last":11,"next":12,"max":99,"used":\d+\}\n\z/,
 qr/^\{"error":"no such counter"\}\n\z/,
 qr/^\{"key":null,"start":null,"issued":0,"last":null,"next":null,"max":null,"used":null\}\n\z/]



=== TEST 2: keys are matched byte for byte with the escaped query value
--- http_config
    ticket_zone ad2:1m;
--- config
    location = /t { ticket_counter zone=ad2 key=$arg_k; }
    location = /admin { ticket_admin zone=ad2; }
--- pipelined_requests eval
["GET /t?k=gal%61", "GET /admin?key=gal%61", "GET /admin?key=gala"]
--- error_code eval
[200, 200, 404]
--- response_body_like eval
[qr/^1\n/, qr/"key":"gal%61","start":1,"issued":1/, qr/no such counter/]



=== TEST 3: POST moves a counter forward, never back
--- http_config
    ticket_zone ad3:1m;
--- config
    location = /t { ticket_counter zone=ad3 key=$arg_k; }
    location = /admin { ticket_admin zone=ad3; }
--- pipelined_requests eval
["GET /t?k=q", "POST /admin?key=q&next=41000", "GET /t?k=q", "POST /admin?key=q&next=41000",
 "POST /admin?key=q&next=41002", "POST /admin?key=q&next=5", "GET /t?k=q"]
--- error_code eval
[200, 200, 200, 409, 200, 409, 200]
--- response_body_like eval
[qr/^1\n/, qr/"issued":40999,"last":40999,"next":41000/, qr/^41000\n/,
 qr/^\{"error":"would reissue"\}\n\z/, qr/"next":41002/, qr/would reissue/, qr/^41002\n/]



=== TEST 4: POST creates a counter, with its start
--- http_config
    ticket_zone ad4:1m;
--- config
    location = /t { ticket_counter zone=ad4 key=$arg_k start=100; }
    location = /d { ticket_counter zone=ad4; }
    location = /admin { ticket_admin zone=ad4; }
--- pipelined_requests eval
["POST /admin?key=new&next=41000&start=100", "GET /t?k=new", "POST /admin?next=500", "GET /d"]
--- error_code eval
[200, 200, 200, 200]
--- response_body_like eval
[qr/^\{"key":"new","start":100,"issued":40900,"last":40999,"next":41000/, qr/^41000\n/,
 qr/"key":null,"start":1,"issued":499/, qr/^500\n/]



=== TEST 5: next below start or above max is 400; max+1 sells the counter out
--- http_config
    ticket_zone ad5:1m;
--- config
    location = /t { ticket_counter zone=ad5 key=$arg_k start=10 max=20; }
    location = /admin { ticket_admin zone=ad5; }
--- pipelined_requests eval
["GET /t?k=s", "POST /admin?key=s&next=9", "POST /admin?key=s&next=22", "POST /admin?key=s&next=21", "GET /t?k=s"]
--- error_code eval
[200, 400, 400, 200, 410]
--- response_body_like eval
[qr/^10\n/, qr/next is below the counter's start/, qr/next is above the counter's max/, qr/"next":21/, qr/sold out/]



=== TEST 6: DELETE retires a key; its next request starts again at start
--- http_config
    ticket_zone ad6:1m;
--- config
    location = /t { ticket_counter zone=ad6 key=$arg_k start=5; }
    location = /admin { ticket_admin zone=ad6; }
--- pipelined_requests eval
["GET /t?k=r", "GET /t?k=r", "DELETE /admin?key=r", "GET /admin?key=r", "DELETE /admin?key=r", "GET /t?k=r"]
--- error_code eval
[200, 200, 200, 404, 404, 200]
--- response_body_like eval
[qr/^5\n/, qr/^6\n/, qr/^\{"key":"r","start":5,"issued":2,"last":6,"next":7,"max":null,"used":\d+,"retired":true\}\n\z/,
 qr/no such counter/, qr/no such counter/, qr/^5\n/]



=== TEST 7: bad requests are 400, other methods 405 with Allow
--- http_config
    ticket_zone ad7:1m;
--- config
    location = /admin { ticket_admin zone=ad7; }
--- pipelined_requests eval
["DELETE /admin", "POST /admin?key=k", "POST /admin?key=k&next=x", "GET /admin?key=",
 "GET /admin?key=" . ("x" x 65), "GET /admin?key=k&next=3", "PUT /admin?key=k"]
--- error_code eval
[400, 400, 400, 400, 400, 400, 405]
--- response_headers eval
["", "", "", "", "", "", "Allow: GET, HEAD, POST, DELETE"]
--- response_body_like eval
[qr/the default counter cannot be deleted/, qr/POST needs next=N/, qr/bad next/, qr/empty key/,
 qr/key too long/, qr/only go with POST/, qr/method not allowed/]



=== TEST 8: protected with nginx's own allow and deny
--- http_config
    ticket_zone ad8:1m;
--- config
    location = /admin { deny all; ticket_admin zone=ad8; }
--- request
GET /admin
--- error_code: 403



=== TEST 9: without zone=, the default zone, as for ticket_counter
--- config
    location = /t { ticket_counter; }
    location = /admin { ticket_admin; }
--- pipelined_requests eval
["GET /t", "GET /admin"]
--- response_body_like eval
[qr/^\d+\n/, qr/"key":null,"start":1,"issued":\d+/]



=== TEST 10: create=off serves only keys that exist; a flood of new keys creates nothing
--- http_config
    ticket_zone ad10:1m;
--- config
    location = /pub { ticket_counter zone=ad10 key=$arg_k create=off; }
    location = /admin { ticket_admin zone=ad10; }
    location = /s { ticket_status zone=ad10; }
--- pipelined_requests eval
[(map { "GET /pub?k=junk$_" } 1 .. 50), "POST /admin?key=show&next=1", "GET /pub?k=show", "GET /pub?k=show", "GET /s"]
--- error_code eval
[(404) x 50, 200, 200, 200, 200]
--- response_body_like eval
[(qr/^no such counter\n\z/) x 50, qr/"next":1/, qr/^1\n/, qr/^2\n/, qr/"keys":1,/]



=== TEST 11: create=off needs key=
--- config
    location = /pub { ticket_counter create=off; }
--- request
GET /pub
--- must_die
--- error_log
"create=off" needs "key=" in "ticket_counter" directive



=== TEST 12: idle keys are gone at once, start afresh, and are counted
--- http_config
    ticket_zone ad12:1m idle=2s;
--- config
    location = /t { ticket_counter zone=ad12 key=$arg_k; }
    location = /pub { ticket_counter zone=ad12 key=$arg_k create=off; }
    location = /admin { ticket_admin zone=ad12; }
    location = /s { ticket_status zone=ad12; }
--- pipelined_requests eval
["GET /t?k=a", "GET /t?k=a", "GET /t?k=b"]
--- response_body eval
["1\n", "2\n", "1\n"]
--- steps
# b is used every 1.2s and stays; a, idle for 2.4s, is gone. The margins
# (0.8s) leave room for valgrind.
sleep 1.2
GET /t?k=b => 200 "2\n"
sleep 1.2
GET /pub?k=a => 404 "no such counter\n"
GET /t?k=b => 200 "3\n"
GET /admin?key=a => 404 /no such counter/
GET /t?k=a => 200 "1\n"
GET /admin?key=a => 200 /"issued":1,/
# Idle for 2s, then swept within the sweeper's 1s round.
sleep 4
GET /s => 200 /"expired":[1-9]\d*,"keys":0,/



=== TEST 13: idle=
--- http_config
    ticket_zone ad13:1m idle=500ms;
--- config
--- request
GET /
--- must_die
--- error_log
invalid value "idle=500ms" in "ticket_zone" directive, it must be a time of at least 1s



=== TEST 14: durable zone: a move and a delete survive a restart
--- http_config
    ticket_zone ad14:1m state=$TEST_NGINX_STATE_DIR/ad14.state reserve=10;
--- config
    location = /t { ticket_counter zone=ad14 key=$arg_k; }
    location = /admin { ticket_admin zone=ad14; }
--- pipelined_requests eval
["GET /t?k=m", "POST /admin?key=m&next=5000", "GET /t?k=m", "GET /t?k=gone", "GET /t?k=gone", "DELETE /admin?key=gone"]
--- error_code eval
[200, 200, 200, 200, 200, 200]
--- response_body_like eval
[qr/^1\n/, qr/"next":5000/, qr/^5000\n/, qr/^1\n/, qr/^2\n/, qr/"retired":true/]



=== TEST 15: an admin location on an unknown zone stops nginx (and the one before it, cleanly)
--- config
    location = /admin { ticket_admin zone=nope15; }
--- request
GET /admin
--- must_die
--- error_log
unknown zone "nope15" in "ticket_admin" directive



=== TEST 16: after a clean stop and start, the moved key goes on, the deleted one starts again
--- http_config
    ticket_zone ad14:1m state=$TEST_NGINX_STATE_DIR/ad14.state reserve=10;
--- config
    location = /t { ticket_counter zone=ad14 key=$arg_k; }
    location = /admin { ticket_admin zone=ad14; }
--- pipelined_requests eval
["GET /t?k=m", "GET /t?k=gone", "POST /admin?key=m&next=10", "GET /admin?key=m"]
--- error_code eval
[200, 200, 409, 200]
--- response_body_like eval
[qr/^5001\n/, qr/^1\n/, qr/would reissue/, qr/"issued":5001,/]
--- error_log eval
qr/ticket zone "ad14": \d+ counters restored from/
