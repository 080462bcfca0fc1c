# Keyed counters: key=VALUE with variables, one counter per distinct value.
use Test::Nginx::Socket 'no_plan';

workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: each key is its own counter, starting at 1
--- http_config
    ticket_zone t1:1m;
--- config
    location = /k { ticket_counter zone=t1 key=$arg_event; }
    location = /t { ticket_counter zone=t1; }
--- pipelined_requests eval
["GET /k?event=gala", "GET /k?event=gala", "GET /k?event=fair", "GET /t", "GET /k?event=gala"]
--- response_body eval
["1\n", "2\n", "1\n", "1\n", "3\n"]



=== TEST 2: a key made of several variables and text
--- http_config
    ticket_zone t2:1m;
--- config
    location = /k { ticket_counter zone=t2 key=$arg_event-$arg_day; }
--- pipelined_requests eval
["GET /k?event=a&day=1", "GET /k?event=a&day=2", "GET /k?event=a&day=1"]
--- response_body eval
["1\n", "1\n", "2\n"]



=== TEST 3: locations with the same zone and key share the counter
--- http_config
    ticket_zone t3:1m;
--- config
    location = /a { ticket_counter zone=t3 key=$arg_k; }
    location = /b { ticket_counter zone=t3 key=$arg_k format=json; }
--- pipelined_requests eval
["GET /a?k=x", "GET /b?k=x", "GET /a?k=x"]
--- response_body eval
["1\n", "{\"ticket\":2}", "3\n"]



=== TEST 4: an empty key is 400
--- http_config
    ticket_zone t4:1m;
--- config
    location = /k { ticket_counter zone=t4 key=$arg_event; }
--- request
GET /k
--- error_code: 400
--- response_body
empty key



=== TEST 5: a key over 64 bytes is 400; 64 bytes is fine
--- http_config
    ticket_zone t5:1m;
--- config
    location = /k { ticket_counter zone=t5 key=$arg_k; }
--- request eval
["GET /k?k=" . ("a" x 65), "GET /k?k=" . ("a" x 64)]
--- error_code eval
[400, 200]
--- response_body eval
["key too long\n", "1\n"]



=== TEST 6: start= sets a new key's first ticket
--- http_config
    ticket_zone t6:1m;
--- config
    location = /k { ticket_counter zone=t6 key=$arg_k start=1000; }
    location = /d { ticket_counter zone=t6 start=0; }
--- pipelined_requests eval
["GET /k?k=a", "GET /k?k=a", "GET /k?k=b", "GET /d", "GET /d"]
--- response_body eval
["1000\n", "1001\n", "1000\n", "0\n", "1\n"]



=== TEST 7: a full zone refuses new keys, and says so in the error log
--- http_config eval
"ticket_zone small7:32k;\n"
. CORE::join("", map { "ticket_variable \$k$_ zone=small7 key=key$_;\n" } 1 .. 300)
--- config eval
'location = /v { return 200 "' . CORE::join(",", map { "\$k$_" } 1 .. 300) . '\n"; }'
--- request
GET /v
--- response_body_like eval
qr/^1(?:,1){100,}(?:,){10,}\n\z/
--- error_log eval
[qr/ticket zone "small7" holds \d+ keys/, qr/ticket zone "small7" is full \(\d+ keys\), new keys refused/]



=== TEST 8: a full zone answers 503 and keeps its existing keys
--- http_config
    ticket_zone small8:32k;
--- config
    location = /k { ticket_counter zone=small8 key=$arg_k; }
--- pipelined_requests eval
[(map { "GET /k?k=key$_" } 1 .. 300), "GET /k?k=key1"]
--- error_code_like eval
[qr/^200$/, (qr/^(?:200|503)$/) x 298, qr/^503$/, qr/^200$/]
--- response_body_like eval
[qr/^1\n\z/, (qr/^(?:1\n|ticket zone full\n)\z/) x 298, qr/^ticket zone full\n\z/, qr/^2\n\z/]
