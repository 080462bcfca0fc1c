# Self-test of the Test::Nginx runner: the generated nginx.conf, config
# sections, user files, init hooks, error log checks and must_die.
use Test::Nginx::Socket;

repeat_each(2);
worker_connections(128);
env_to_nginx("SELFTEST_FOO=bar");
plan tests => repeat_each() * 33 + 7;
no_shuffle();
run_tests();

__DATA__

=== TEST 1: shape of the generated nginx.conf (checked from --- init)
--- main_config
timer_resolution 100ms;
--- http_config
    map $arg_k $mapped { default "dflt"; x "ex"; }
--- post_main_config
pcre_jit off;
--- config
    location = /t { return 200 "$mapped"; }
--- init
my $conf = do { local (@ARGV, $/) = $Test::Nginx::Util::ConfFile; <> };
my $root = $Test::Nginx::Util::ServRoot;
my $port = $ENV{TEST_NGINX_SERVER_PORT};
Test::More::like($conf, qr/^worker_processes\s+1;\ndaemon on;\nmaster_process off;\n/m, "conf head");
Test::More::like($conf, qr/^error_log \Q$root\E\/logs\/error\.log debug;\npid\s+\Q$root\E\/logs\/nginx\.pid;$/m, "error_log and pid");
Test::More::like($conf, qr/^env SELFTEST_FOO=bar;$/m, "env_to_nginx");
Test::More::like($conf, qr/timer_resolution 100ms;.*\nhttp \{.*default_type text\/plain;.*keepalive_timeout\s+68000ms;.*map \$arg_k.*server \{/s, "main_config, http_config");
Test::More::like($conf, qr/listen\s+$port;.*server_name\s+'localhost';.*client_max_body_size 30M;.*location = \/t.*location \/ \{\s+root \Q$root\E\/html;/s, "server block");
Test::More::like($conf, qr/\n\}\s+pcre_jit off;\s+.*events \{\s+accept_mutex off;\s+worker_connections\s+128;\s+\}/s, "post_main_config, events");
Test::More::like($conf, $> == 0 ? qr/^user root;$/m : qr/^(?!user )/, "user root when root");
--- request eval
["GET /t", "GET /t?k=x"]
--- response_body eval
["dflt", "ex"]



=== TEST 2: user_files, with a subdirectory, a date and env expansion
--- config
--- user_files
>>> foo.txt
port $TEST_NGINX_SERVER_PORT
>>> sub/dir/bar.txt 202001021530.45
bar
--- request eval
["GET /foo.txt", "GET /sub/dir/bar.txt"]
--- response_headers eval
["", "Last-Modified: Thu, 02 Jan 2020 15:30:45 GMT"]
--- response_body eval
["port $ENV{TEST_NGINX_SERVER_PORT}\n", "bar\n"]



=== TEST 3: user_files eval and post_setup_server_root
--- config
    location = /eval.txt {
        root html;
        include extra.conf;
    }
--- user_files eval
[["eval.txt", "from eval\n"]]
--- post_setup_server_root
open my $fh, '>', "$Test::Nginx::Util::ServRoot/conf/extra.conf" or die $!;
print $fh "add_header X-Extra included;\n";
close $fh;
--- request
GET /eval.txt
--- response_headers
X-Extra: included
--- response_body
from eval



=== TEST 4: error_log and no_error_log, plain lines
--- config
    location = /missing.html { root html; }
--- request
GET /missing.html
--- error_code: 404
--- error_log
No such file or directory
missing.html
--- no_error_log
[alert]
[crit]



=== TEST 5: error_log and no_error_log with eval: regexes and arrays
--- config
    location = /missing.html { root html; }
--- request
GET /missing.html
--- error_code: 404
--- error_log eval
[qr/\[error\] .*open\(\) ".*missing\.html" failed/, "(2: No such file"]
--- no_error_log eval
qr/\[emerg\]/



=== TEST 6: --- log_level for one block
--- config
    location = /missing.html { root html; }
--- log_level: error
--- request
GET /missing.html
--- error_code: 404
--- error_log
[error]
--- no_error_log
[info]
[debug]



=== TEST 7: must_die on a bogus directive, checking the error log
--- config
    bogus_directive on;
--- must_die
--- suppress_stderr
--- error_log
unknown directive "bogus_directive"
[emerg]
--- no_error_log
[alert]



=== TEST 8: must_die with the exit code, bogus main_config
--- main_config
bogus_main_directive 1;
--- config
--- must_die: 1
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*unknown directive "bogus_main_directive"/



=== TEST 9: nginx starts again after must_die
--- config
    location = /t { return 200 "alive\n"; }
--- request
GET /t
--- response_body
alive
