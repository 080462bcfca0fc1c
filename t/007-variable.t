# ticket_variable: a variable that takes one ticket when a request first
# reads it, and keeps that value for the rest of the request.
use lib 't/lib';
use File::Temp qw(tempdir);
use Test::Nginx::Socket 'no_plan';
use Steps;

# Outside the server root, which the runner wipes between blocks.
$ENV{TEST_NGINX_STATE_DIR} = tempdir('ngx-ticket-state-XXXXXX', TMPDIR => 1, CLEANUP => 1);

workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: one ticket per request, however often the variable is read
--- http_config
    ticket_zone t1:1m;
    ticket_variable $ticket zone=t1;
--- config
    location = /v {
        add_header X-Ticket $ticket;
        add_header X-Again $ticket;
        return 200 "ticket $ticket\n";
    }
--- pipelined_requests eval
["GET /v", "GET /v"]
--- response_headers eval
["X-Ticket: 1\nX-Again: 1", "X-Ticket: 2\nX-Again: 2"]
--- response_body eval
["ticket 1\n", "ticket 2\n"]



=== TEST 2: shares the zone's counters with ticket_counter
--- http_config
    ticket_zone t2:1m;
    ticket_variable $seat zone=t2 key=$arg_event;
--- config
    location = /v { return 200 "$seat\n"; }
    location = /c { ticket_counter zone=t2 key=$arg_event; }
--- pipelined_requests eval
["GET /v?event=a", "GET /c?event=a", "GET /v?event=a", "GET /v?event=b"]
--- response_body eval
["1\n", "2\n", "3\n", "1\n"]



=== TEST 3: sold out: the variable is not found (log_format writes "-")
--- http_config
    ticket_zone t3:1m;
    ticket_variable $first zone=t3 key=seat max=1;
    ticket_variable $second zone=t3 key=seat max=1;
    log_format tickets "tickets first=$first second=$second";
--- config
    location = /v {
        access_log logs/error.log tickets;
        return 200 "[$first][$second]\n";
    }
--- request
GET /v
--- response_body
[1][]
--- error_log
tickets first=1 second=-



=== TEST 4: a request that never reads it takes nothing
--- http_config
    ticket_zone t4:1m;
    ticket_variable $ticket zone=t4;
--- config
    location = /v { return 200 "$ticket\n"; }
    location = /other { return 200 "no ticket\n"; }
--- pipelined_requests eval
["GET /other", "GET /v"]
--- response_body eval
["no ticket\n", "1\n"]



=== TEST 5: errors
--- http_config
    ticket_variable $t key=$arg_k;
--- config
--- request
GET /
--- must_die
--- error_log
"ticket_variable" must have "zone=" parameter



=== TEST 6: unknown zone
--- http_config
    ticket_variable $t zone=nope;
--- config
--- request
GET /
--- must_die
--- error_log
unknown zone "nope" in "ticket_variable" directive



=== TEST 7: bad variable name
--- http_config
    ticket_zone t:1m;
    ticket_variable t zone=t;
--- config
--- request
GET /
--- must_die
--- error_log
invalid variable name "t" in "ticket_variable" directive



=== TEST 8: on a durable zone the variable never waits: a new key is not found until its reservation is on disk
--- http_config
    ticket_zone t8:1m state=$TEST_NGINX_STATE_DIR/t8.state reserve=10;
    ticket_variable $t8 zone=t8 key=$arg_k;
--- config
    location = /v { return 200 "[$t8]\n"; }
--- request
GET /v?k=new
--- response_body
[]
--- steps
sleep 1
GET /v?k=new => 200 "[1]\n"
GET /v?k=new => 200 "[2]\n"
--- error_log
reservation not on disk yet (a variable cannot wait)
