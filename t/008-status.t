# ticket_status: every counter of a zone (or of all zones), with limits and
# the zone's capacity and use, without taking a ticket.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use PromCheck;

workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: JSON status of one zone; reading it takes no ticket
--- http_config
    ticket_zone t1:1m;
--- config
    location = /t { ticket_counter zone=t1; }
    location = /k { ticket_counter zone=t1 key=$arg_k max=9; }
    location = /s { ticket_status zone=t1; }
--- pipelined_requests eval
["GET /t", "GET /t", "GET /k?k=gala", "GET /s", "GET /s", "GET /t"]
--- response_headers eval
["", "", "", "Content-Type: application/json", "Cache-Control: no-store", ""]
--- response_body_like eval
[qr/^1\n/, qr/^2\n/, qr/^1\n/,
 qr/^\{"zones":\{"t1":\{"capacity":\d+,"counters":\[\{"issued":2,"key":null,"last":2,"max":null,"start":1,"used":\d+\},\{"issued":1,"key":"gala","last":1,"max":9,"start":1,"used":\d+\}\],"expired":0,"keys":1,"size":1048576\}\}\}\n\z/,
 qr/"issued":2,"key":null/,
 qr/^3\n/]



=== TEST 2: without zone=, every zone
--- http_config
    ticket_zone a:1m;
    ticket_zone b:1m;
--- config
    location = /a { ticket_counter zone=a; }
    location = /s { ticket_status; }
--- pipelined_requests eval
["GET /a", "GET /s"]
--- response_body_like eval
[qr/^1\n/, qr/"a":\{"capacity":\d+,"counters":\[\{"issued":1.*"b":\{"capacity":\d+,"counters":\[\{"issued":0,"key":null,"last":null/]



=== TEST 3: Prometheus text that prometheus_client's parser accepts
--- http_config
    ticket_zone t3:1m;
--- config
    location = /k { ticket_counter zone=t3 key=$arg_k; }
    location = /metrics { ticket_status zone=t3 format=prometheus; }
--- pipelined_requests eval
["GET /k?k=a", "GET /k?k=a", "GET /k?k=b%22q", "GET /metrics"]
--- response_body_like eval
[qr/^1\n/, qr/^2\n/, qr/^1\n/, qr/ticket_issued_total\{zone="t3",key="a"\} 2\n/]
--- prometheus_samples
ticket_issued_total zone=t3 key=a 2
ticket_issued_total zone=t3 key=b%22q 1
ticket_last zone=t3 key=a 2
ticket_zone_keys zone=t3 2



=== TEST 4: access control is nginx's own
--- http_config
    ticket_zone t4:1m;
--- config
    location = /s {
        deny all;
        ticket_status;
    }
--- request
GET /s
--- error_code: 403



=== TEST 5: only GET and HEAD
--- http_config
    ticket_zone t5:1m;
--- config
    location = /s { ticket_status; }
--- request
POST /s
x
--- error_code: 405
--- response_headers
Allow: GET, HEAD



=== TEST 6: bad format
--- config
    location = /s { ticket_status format=yaml; }
--- request
GET /s
--- must_die
--- error_log
invalid value "format=yaml" in "ticket_status" directive
