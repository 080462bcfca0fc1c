# nginx -s reload keeps every counter: the zone is reused when its name and
# size are unchanged, and its counters are carried over when the size changes.
use Test::Nginx::Socket 'no_plan';

use_hup();
workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: tickets before the reload
--- http_config
    ticket_zone t:1m;
--- config
    location = /t { ticket_counter zone=t; }
    location = /k { ticket_counter zone=t key=$arg_k; }
    location = /d { ticket_counter; }
--- pipelined_requests eval
["GET /t", "GET /t", "GET /t", "GET /k?k=a", "GET /d"]
--- response_body eval
["1\n", "2\n", "3\n", "1\n", "1\n"]



=== TEST 2: same configuration reloaded: counting goes on
--- http_config
    ticket_zone t:1m;
--- config
    location = /t { ticket_counter zone=t; }
    location = /k { ticket_counter zone=t key=$arg_k; }
    location = /d { ticket_counter; }
--- pipelined_requests eval
["GET /t", "GET /k?k=a", "GET /d"]
--- response_body eval
["4\n", "2\n", "2\n"]



=== TEST 3: a changed configuration with the same zone keeps it
--- http_config
    ticket_zone t:1m;
--- config
    location = /renamed { ticket_counter zone=t; }
    location = /k { ticket_counter zone=t key=$arg_k format=json; }
--- pipelined_requests eval
["GET /renamed", "GET /k?k=a"]
--- response_body eval
["5\n", "{\"ticket\":3}"]



=== TEST 4: a new zone size: every counter is carried over
--- http_config
    ticket_zone t:2m;
--- config
    location = /t { ticket_counter zone=t; }
    location = /k { ticket_counter zone=t key=$arg_k; }
--- request
GET /t
--- response_body
6
--- error_log
ticket zone "t" resized: 2 counters carried over



=== TEST 5: keyed counters came along
--- http_config
    ticket_zone t:2m;
--- config
    location = /t { ticket_counter zone=t; }
    location = /k { ticket_counter zone=t key=$arg_k; }
--- pipelined_requests eval
["GET /k?k=a", "GET /k?k=b"]
--- response_body eval
["4\n", "1\n"]



=== TEST 6: and back to the first size
--- http_config
    ticket_zone t:1m;
--- config
    location = /t { ticket_counter zone=t; }
    location = /k { ticket_counter zone=t key=$arg_k; }
--- pipelined_requests eval
["GET /t", "GET /k?k=a", "GET /k?k=b"]
--- response_body eval
["7\n", "5\n", "2\n"]
