# Configuration errors: nginx refuses to start, naming the directive and
# quoting the bad value.
use Test::Nginx::Socket 'no_plan';

no_shuffle();
run_tests();

__DATA__

=== TEST 1: bad zone size
--- http_config
    ticket_zone t:1x;
--- config
    location = /t { ticket_counter zone=t; }
--- request
GET /t
--- must_die
--- error_log
invalid zone size "1x" in "ticket_zone" directive



=== TEST 2: zone too small
--- http_config
    ticket_zone t:8k;
--- config
    location = /t { ticket_counter zone=t; }
--- request
GET /t
--- must_die
--- error_log
zone "t" is too small in "ticket_zone" directive: "8k", the minimum is 32k



=== TEST 3: no size
--- http_config
    ticket_zone t;
--- config
    location = /t { ticket_counter zone=t; }
--- request
GET /t
--- must_die
--- error_log
invalid zone "t" in "ticket_zone" directive, NAME:SIZE expected



=== TEST 4: a zone declared twice
--- http_config
    ticket_zone t:1m;
    ticket_zone t:2m;
--- config
    location = /t { ticket_counter zone=t; }
--- request
GET /t
--- must_die
--- error_log
duplicate zone "t" in "ticket_zone" directive



=== TEST 5: unknown zone
--- http_config
    ticket_zone t:1m;
--- config
    location = /t { ticket_counter zone=nope; }
--- request
GET /t
--- must_die
--- error_log eval
qr/unknown zone "nope" in "ticket_counter" directive in \S+nginx\.conf:\d+/



=== TEST 6: ticket_counter outside a location
--- http_config
    ticket_zone t:1m;
--- config
    ticket_counter zone=t;
--- request
GET /t
--- must_die
--- error_log
"ticket_counter" directive is not allowed here



=== TEST 7: ticket_zone outside http
--- http_config
--- config
    location = /t {
        ticket_zone t:1m;
    }
--- request
GET /t
--- must_die
--- error_log
"ticket_zone" directive is not allowed here



=== TEST 8: unknown parameter
--- config
    location = /t { ticket_counter zone=t colour=red; }
--- request
GET /t
--- must_die
--- error_log
invalid parameter "colour=red" in "ticket_counter" directive



=== TEST 9: bad parameter value
--- config
    location = /t { ticket_counter start=one; }
--- request
GET /t
--- must_die
--- error_log
invalid value "start=one" in "ticket_counter" directive



=== TEST 10: the zone name is taken by another module
--- http_config
    limit_req_zone $binary_remote_addr zone=t:1m rate=1r/s;
    ticket_zone t:1m;
--- config
    location = /t { ticket_counter zone=t; }
--- request
GET /t
--- must_die
--- error_log
the shared memory zone "t" is already declared for a different use



=== TEST 11: ticket_counter twice in one location
--- config
    location = /t {
        ticket_counter;
        ticket_counter;
    }
--- request
GET /t
--- must_die
--- error_log
"ticket_counter" directive is duplicate
