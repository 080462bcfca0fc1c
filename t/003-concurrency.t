# Tickets are shared by every worker: under concurrent load over many
# connections, all tickets are unique and form one contiguous range.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use TicketLoad;

workers(2);
master_on();
worker_connections(1024);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: 8 clients x 10 connections x 50 requests: tickets 1..4001
--- http_config
    ticket_zone t1:1m;
--- config
    location = /t {
        ticket_counter zone=t1;
        add_header X-Worker $pid;
    }
--- request
GET /t
--- response_body
1
--- concurrent_load: 8 10 50 /t
--- concurrent_tickets: 1..4001
--- concurrent_workers: 2
--- no_error_log
[error]



=== TEST 2: the default zone under the same load
--- config
    location = /t {
        ticket_counter;
        add_header X-Worker $pid;
    }
--- request
GET /t
--- response_body
1
--- concurrent_load: 6 10 40 /t
--- concurrent_tickets: 1..2401
--- concurrent_workers: 2
