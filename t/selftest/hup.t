# Self-test of the Test::Nginx runner in HUP reload mode: nginx is started
# once (with a master process) and reloaded for each block's config.
use Test::Nginx::Socket;

use_hup();
workers(2);
plan tests => 25;
no_shuffle();
run_tests();

__DATA__

=== TEST 1: first block starts nginx
--- config
    location = /t { return 200 "one\n"; }
--- request
GET /t
--- response_body
one
--- no_error_log
[error]



=== TEST 2: a new config is in effect after the reload
--- config
    location = /t { return 200 "two\n"; }
--- request eval
["GET /t", "GET /t", "GET /t"]
--- response_body eval
["two\n", "two\n", "two\n"]



=== TEST 3: no --- config: no reload, same server
--- request
GET /t
--- response_body
two



=== TEST 4: user files are rewritten on reload; pipelined requests
--- config
--- user_files
>>> hup.txt
reloaded
--- pipelined_requests eval
["GET /hup.txt", "GET /index.html"]
--- response_body eval
["reloaded\n", qr/It works!/]



=== TEST 5: a reload that fails keeps the previous config
--- config
    bogus_directive_in_reload on;
--- reload_fails
--- request
GET /hup.txt
--- error_code: 404
--- error_log
unknown directive "bogus_directive_in_reload"
[emerg]



=== TEST 6: must_die works in HUP mode too
--- config
    another_bogus_directive on;
--- must_die
--- suppress_stderr
--- error_log
unknown directive "another_bogus_directive"
[emerg]



=== TEST 7: and nginx comes back afterwards
--- config
    location = /t { return 200 "seven\n"; }
--- request
GET /t
--- response_body
seven



=== TEST 8: and reloads again
--- config
    location = /t { return 200 "eight\n"; }
--- request
GET /t
--- response_body
eight
