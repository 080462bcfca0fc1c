# Redis zones: counters whose authority is a real redis-server, started by
# this file on loopback. Every block uses zones of its own (HUP mode reloads
# between blocks, and Redis keeps the counters of every block anyway).
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use RedisServer;
use Steps;
use PromCheck;

$ENV{TEST_NGINX_REDIS_PORT} = 16390;
$ENV{TEST_NGINX_REDIS_AUTH_PORT} = 16391;
$ENV{TEST_NGINX_REDIS_MUTE_PORT} = 16392;
$ENV{TEST_NGINX_REDIS_REPLICA_PORT} = 16393;
$ENV{TEST_NGINX_REDIS_SLOW_PORT} = 16394;
RedisServer::start(port => $ENV{TEST_NGINX_REDIS_PORT});
RedisServer::start(port => $ENV{TEST_NGINX_REDIS_REPLICA_PORT},
                   replicaof => $ENV{TEST_NGINX_REDIS_PORT});
RedisServer::start(port => $ENV{TEST_NGINX_REDIS_AUTH_PORT}, password => 's3cret');
RedisServer::mute(port => $ENV{TEST_NGINX_REDIS_MUTE_PORT});
RedisServer::slow(port => $ENV{TEST_NGINX_REDIS_SLOW_PORT}, to => $ENV{TEST_NGINX_REDIS_PORT},
                  delay => 0.7);

workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: tickets in order, from Redis; keys, start= and format=json
--- http_config
    ticket_zone rd1:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s;
--- config
    location = /t { ticket_counter zone=rd1; }
    location = /k { ticket_counter zone=rd1 key=$arg_k start=100 format=json; }
--- pipelined_requests eval
["GET /t", "GET /t", "GET /t", "GET /k?k=a", "GET /k?k=a", "GET /k?k=b"]
--- response_body eval
["1\n", "2\n", "3\n", "{\"ticket\":100}", "{\"ticket\":101}", "{\"ticket\":100}"]
--- steps
redis $TEST_NGINX_REDIS_PORT GET ticket:rd1 => "3"
redis $TEST_NGINX_REDIS_PORT GET ticket:rd1:a => "2"



=== TEST 2: the value at the key is the count: an operator sets it to migrate
--- http_config
    ticket_zone rd2:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s;
--- config
    location = /t { ticket_counter zone=rd2; }
--- request
HEAD /t
--- steps
redis $TEST_NGINX_REDIS_PORT SET ticket:rd2 41999 => "OK"
GET /t => 200 "42000\n"
GET /t => 200 "42001\n"
redis $TEST_NGINX_REDIS_PORT GET ticket:rd2 => "42001"



=== TEST 3: max= is exact and a batch is all-or-nothing
--- http_config
    ticket_zone rd3:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s;
--- config
    location = /b { ticket_counter zone=rd3 key=$arg_k max=5 batch=10; }
--- pipelined_requests eval
["GET /b?k=s&count=3", "GET /b?k=s&count=3", "GET /b?k=s&count=2", "GET /b?k=s", "GET /b?k=s&count=11"]
--- error_code eval
[200, 410, 200, 410, 400]
--- response_body eval
["1 3\n", "sold out\n", "4 5\n", "sold out\n", "bad count\n"]



=== TEST 4: at 2^63-1 a counter answers 410
--- http_config
    ticket_zone rd4:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s;
--- config
    location = /t { ticket_counter zone=rd4; }
--- request
HEAD /t
--- steps
redis $TEST_NGINX_REDIS_PORT SET ticket:rd4 9223372036854775806 => "OK"
GET /t => 200 "9223372036854775807\n"
GET /t => 410 "sold out\n"



=== TEST 5: start= past 2^63-1 on a Redis zone is a configuration error
--- http_config
    ticket_zone rd5:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { ticket_counter zone=rd5 start=9223372036854775808; }
--- request
GET /t
--- must_die
--- error_log eval
qr/invalid value "start=9223372036854775808" in "ticket_counter" directive: zone "rd5" keeps its counters in Redis, whose integers end at 9223372036854775807/



=== TEST 6: max= past 2^63-1 too
--- http_config
    ticket_zone rd6:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { ticket_counter zone=rd6 max=18446744073709551615; }
--- request
GET /t
--- must_die
--- error_log
invalid value "max=18446744073709551615" in "ticket_counter" directive



=== TEST 7: a bad URL names the directive, quotes the value, never the password
--- http_config
    ticket_zone rd7:1m redis=redis://user:hunter2@127.0.0.1:0;
--- config
--- request
GET /
--- must_die
--- error_log
invalid redis URL "redis://user:***@127.0.0.1:0" in "ticket_zone" directive
--- no_error_log
hunter2



=== TEST 8: other bad parameters
--- http_config
    ticket_zone rd8:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT state=/tmp/x.state;
--- config
--- request
GET /
--- must_die
--- error_log
"state=" and "redis=" cannot be combined in "ticket_zone" directive



=== TEST 9: a variable cannot wait for Redis: strict zones refuse it
--- http_config
    ticket_zone rd9:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ticket_variable $t zone=rd9;
--- config
--- request
GET /
--- must_die
--- error_log
"ticket_variable" cannot use zone "rd9": a variable cannot wait for Redis; give the zone "lease="



=== TEST 10: AUTH with the right password
--- http_config
    ticket_zone rd10:1m redis=redis://:s3cret@127.0.0.1:$TEST_NGINX_REDIS_AUTH_PORT redis_timeout=5s;
--- config
    location = /t { ticket_counter zone=rd10; }
--- pipelined_requests eval
["GET /t", "GET /t"]
--- response_body eval
["1\n", "2\n"]
--- no_error_log
s3cret



=== TEST 11: a wrong password: 503, said once, the password never shown
--- http_config
    ticket_zone rd11:1m redis=redis://:wrong-pw@127.0.0.1:$TEST_NGINX_REDIS_AUTH_PORT redis_timeout=5s;
--- config
    location = /t { ticket_counter zone=rd11; }
--- request
GET /t
--- wait: 0.3
--- error_code: 503
--- response_body
ticket authority unavailable
--- error_log eval
qr/ticket: redis redis:\/\/:\*\*\*\@127\.0\.0\.1:\d+\/0 is unavailable: redis authentication failed/
--- no_error_log
wrong-pw



=== TEST 12: Redis unreachable: 503 at once, and the worker's other locations answer
--- http_config
    ticket_zone rd12:1m redis=redis://127.0.0.1:1 redis_timeout=5s;
    ticket_zone local12:1m;
--- config
    location = /t { ticket_counter zone=rd12; }
    location = /l { ticket_counter zone=local12; }
--- pipelined_requests eval
["GET /t", "GET /l", "GET /t"]
--- error_code eval
[503, 200, 503]
--- response_body eval
["ticket authority unavailable\n", "1\n", "ticket authority unavailable\n"]



=== TEST 13: lease mode: numbers taken a lease at a time
--- http_config
    ticket_zone rd13:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s lease=50;
    ticket_variable $order zone=rd13 key=orders;
--- config
    location = /t { ticket_counter zone=rd13; }
    location = /v { return 200 "$order\n"; }
--- pipelined_requests eval
["GET /t", "GET /t", "GET /t"]
--- response_body_like eval
[qr/^\d+\n/, qr/^\d+\n/, qr/^\d+\n/]
--- steps
redis $TEST_NGINX_REDIS_PORT GET ticket:rd13 => /^(50|100)$/
# a new key has no lease yet: not found, and its first lease is asked for
GET /v => 200 /^(\d+)?\n/
sleep 0.5
GET /v => 200 /^\d+\n/
redis $TEST_NGINX_REDIS_PORT GET ticket:rd13:orders => /^(50|100)$/



=== TEST 14: admin: look, move forward (never back), retire
--- http_config
    ticket_zone rd14:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s;
--- config
    location = /k { ticket_counter zone=rd14 key=$arg_k; }
    location = /admin { ticket_admin zone=rd14; }
--- pipelined_requests eval
["GET /k?k=a", "GET /admin?key=a", "POST /admin?key=a&next=41000", "GET /k?k=a",
 "POST /admin?key=a&next=10", "GET /admin?key=nope", "DELETE /admin?key=a", "GET /k?k=a"]
--- error_code eval
[200, 200, 200, 200, 409, 404, 200, 200]
--- response_body_like eval
[qr/^1\n/, qr/"key":"a","start":1,"issued":1,"last":1,"next":2/, qr/"issued":40999,/, qr/^41000\n/,
 qr/would reissue/, qr/no such counter/, qr/"retired":true/, qr/^1\n/]



=== TEST 15: create=off serves keys Redis has, made by an admin anywhere
--- http_config
    ticket_zone rd15:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s;
--- config
    location = /pub { ticket_counter zone=rd15 key=$arg_k create=off; }
--- request
GET /pub?k=nope
--- error_code: 404
--- response_body
no such counter
--- steps
redis $TEST_NGINX_REDIS_PORT SET ticket:rd15:made 6 => "OK"
GET /pub?k=made => 200 "7\n"
GET /pub?k=other => 404 "no such counter\n"



=== TEST 16: the status page names the authority, without the password
--- http_config
    ticket_zone rd16:1m redis=redis://:s3cret@127.0.0.1:$TEST_NGINX_REDIS_AUTH_PORT redis_timeout=5s;
--- config
    location = /t { ticket_counter zone=rd16; }
    location = /s { ticket_status zone=rd16; }
    location = /metrics { ticket_status zone=rd16 format=prometheus; }
--- pipelined_requests eval
["GET /t", "GET /s", "GET /metrics"]
--- response_body_like eval
[qr/^1\n/, qr/"redis":\{"authority":"redis:\/\/:\*\*\*\@127\.0\.0\.1:\d+\/0","batches":\d+,"connected":\d,/,
 qr/ticket_redis_batches_total\{zone="rd16"\} \d+/]
--- no_error_log
s3cret



=== TEST 17: a Redis that lost the zone's data never hands out a number again
--- http_config
    ticket_zone rd17:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s fence=100;
--- config
    location = /k { ticket_counter zone=rd17 key=$arg_k; }
--- request
GET /k?k=a
--- response_body
1
--- steps
GET /k?k=a => 200 "2\n"
GET /k?k=a => 200 "3\n"
# the counter, its metadata and the zone's, as an empty restart leaves them
redis $TEST_NGINX_REDIS_PORT DEL ticket:rd17:a ticket:rd17;a ticket:rd17; => "3"
GET /k?k=a => 200 "104\n"
GET /k?k=a => 200 "105\n"
--- error_log eval
[qr/ticket zone "rd17": redis lost the zone's data \(a new epoch\)/,
 qr/ticket zone "rd17": redis counter "a" was below the numbers this nginx already took from it \(redis lost data\): raised past them by 100/]



=== TEST 18: a Redis that accepts and never answers: 503 within redis_timeout, a local zone at once
--- http_config
    ticket_zone rd18:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_MUTE_PORT redis_timeout=300ms;
    ticket_zone loc18:1m;
--- config
    location = /t { ticket_counter zone=rd18; }
    location = /l { ticket_counter zone=loc18; }
--- pipelined_requests eval
["GET /t", "GET /l", "GET /t"]
--- error_code eval
[503, 200, 503]
--- response_body eval
["ticket authority unavailable\n", "1\n", "ticket authority unavailable\n"]
--- steps
GET /t => 503 "ticket authority unavailable\n" within 2
GET /l => 200 "2\n" within 1
--- timeout: 10



=== TEST 19: redis_replicas=: answered once the replica has the batch (such a zone writes every batch: no reserve)
--- http_config
    ticket_zone rd19:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s redis_replicas=1;
--- config
    location = /t { ticket_counter zone=rd19; }
--- pipelined_requests eval
["GET /t", "GET /t"]
--- response_body eval
["1\n", "2\n"]
--- steps
redis $TEST_NGINX_REDIS_REPLICA_PORT GET ticket:rd19 => "2"



=== TEST 20: redis_replicas= more than there are: 503 within redis_timeout, said, the connection kept
--- http_config
    ticket_zone rd20:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=600ms redis_replicas=2;
--- config
    location = /t { ticket_counter zone=rd20; }
    location = /s { ticket_status zone=rd20; }
--- request
GET /t
--- error_code: 503
--- response_body
ticket authority unavailable
--- steps
GET /t => 503 "ticket authority unavailable\n" within 2
GET /s => 200 /"errors":[1-9]\d*,"fences":0,/
GET /s => 200 /"timeouts":0,/
--- error_log
ticket zone "rd20": only 1 of 2 redis replicas acknowledged a batch: its tickets are not handed out
--- no_error_log
is unavailable
--- timeout: 10



=== TEST 21: a replica is no authority: 503, and the log says why
--- http_config
    ticket_zone rd21:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_REPLICA_PORT redis_timeout=1s;
--- config
    location = /t { ticket_counter zone=rd21; }
--- request
GET /t
--- error_code: 503
--- response_body
ticket authority unavailable
--- error_log eval
qr/ticket: redis redis:\/\/127\.0\.0\.1:\d+\/0 is unavailable: redis is not a master \(role:slave\); ticket zones need the master/
--- timeout: 10



=== TEST 22: idle= removed: the expiry it set goes, and the counter in use never restarts
--- http_config
    ticket_zone rd22:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s;
--- config
    location = /k { ticket_counter zone=rd22 key=$arg_k; }
--- request
GET /k?k=a
--- response_body
1
--- steps
redis $TEST_NGINX_REDIS_PORT PEXPIRE ticket:rd22:a 1000 => "1"
redis $TEST_NGINX_REDIS_PORT PEXPIRE ticket:rd22;a 1000 => "1"
GET /k?k=a => 200 "2\n"
redis $TEST_NGINX_REDIS_PORT PTTL ticket:rd22:a => "-1"
redis $TEST_NGINX_REDIS_PORT PTTL ticket:rd22;a => "-1"
sleep 1.5
GET /k?k=a => 200 "3\n"



=== TEST 23: zones on one Redis with another redis_timeout= each wait their own
--- http_config
    ticket_zone rd23a:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_MUTE_PORT redis_timeout=300ms;
    ticket_zone rd23b:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_MUTE_PORT redis_timeout=6s;
--- config
    location = /a { ticket_counter zone=rd23a; }
    location = /b { ticket_counter zone=rd23b; }
--- request
GET /a
--- error_code: 503
--- response_body
ticket authority unavailable
--- steps
GET /b => 503 "ticket authority unavailable\n" after 3 within 15
GET /a => 503 "ticket authority unavailable\n" within 3
--- timeout: 30



=== TEST 24: zones whose Redis keys would meet are a configuration error
--- http_config
    ticket_zone rd24:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ticket_zone b:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_prefix=ticket:rd24:;
--- config
--- request
GET /
--- must_die
--- error_log
ticket zones "rd24" and "b" would share Redis keys ("ticket:rd24" and "ticket:rd24:b" on one database); give them redis_prefix= values that keep them apart



=== TEST 25: the same names on another database are apart
--- http_config
    ticket_zone rd25:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT/0 redis_timeout=5s;
    ticket_zone c:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT/1 redis_timeout=5s redis_prefix=ticket:rd25:;
--- config
    location = /t { ticket_counter zone=rd25 key=$arg_k; }
    location = /c { ticket_counter zone=c; }
--- pipelined_requests eval
["GET /t?k=c", "GET /t?k=c", "GET /c"]
--- response_body eval
["1\n", "2\n", "1\n"]



=== TEST 26: a quit is not held up by a Redis that never answers, when no request waits for it
--- http_config
    ticket_zone rd26:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_MUTE_PORT redis_timeout=30s;
    ticket_zone loc26:1m;
--- config
    location = /t { ticket_counter zone=rd26; }
    location = /l { ticket_counter zone=loc26; }
--- request
GET /l
--- response_body
1
--- steps
quit within 12
--- timeout: 60



=== TEST 27: reserve=: a counter's durable ceiling in Redis, raised only when a batch would pass it; the count in Redis's memory between
--- http_config
    ticket_zone rd27:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s reserve=3;
--- config
    location = /t { ticket_counter zone=rd27; }
    location = /k { ticket_counter zone=rd27 key=$arg_k; }
--- pipelined_requests eval
["GET /t", "GET /t", "GET /t", "GET /t", "GET /t", "GET /k?k=a"]
--- response_body eval
["1\n", "2\n", "3\n", "4\n", "5\n", "1\n"]
--- steps
redis $TEST_NGINX_REDIS_PORT GET ticket:rd27 => "5"
redis $TEST_NGINX_REDIS_PORT HGET ticket:rd27; r => "8"
redis $TEST_NGINX_REDIS_PORT HGET ticket:rd27;a r => "4"



=== TEST 28: reserve= on a Redis zone: 0 (every batch written) to 1000000000
--- http_config
    ticket_zone rd28:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT reserve=1000000001;
--- config
--- request
GET /
--- must_die
--- error_log
invalid value "reserve=1000000001" in "ticket_zone" directive, it must be between 0 and 1000000000



=== TEST 29: reserve= and redis_replicas= cannot be combined (WAIT covers what its connection wrote)
--- http_config
    ticket_zone rd29:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT reserve=100 redis_replicas=1;
--- config
--- request
GET /
--- must_die
--- error_log
"reserve=100" cannot be combined with "redis_replicas=" in "ticket_zone" directive: such a zone writes every batch and waits for its replicas



=== TEST 30: requests made while a worker still connects to Redis wait for it: tickets, admin calls and create=off checks alike
--- http_config
    ticket_zone rd30:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_SLOW_PORT redis_timeout=5s;
--- config
    location = /k { ticket_counter zone=rd30 key=$arg_k; }
    location = /pub { ticket_counter zone=rd30 key=$arg_k create=off; }
    location = /admin { ticket_admin zone=rd30; }
--- pipelined_requests eval
["GET /admin?key=a", "GET /pub?k=a", "GET /k?k=a", "GET /admin?key=a", "GET /pub?k=a"]
--- error_code eval
[404, 404, 200, 200, 200]
--- response_body_like eval
[qr/no such counter/, qr/^no such counter\n/, qr/^1\n/, qr/"key":"a","start":1,"issued":1,/, qr/^2\n/]
--- no_error_log
[error]

