# Self-test of the Test::Nginx runner: Perl-level settings and hooks
# (block preprocessors, response body checks, no_root_location, master_on,
# accessors) and the 'no_plan' import form.
use Test::Nginx::Socket 'no_plan';

master_on();
workers(2);
log_level('warn');
no_long_string();
no_root_location();
timeout(5);

# Blocks without --- config get a default one.
add_block_preprocessor(sub {
    my $block = shift;
    if (!defined $block->config) {
        $block->set_value("config", <<'_END_');
    location = /t {
        add_header X-Workers "$arg_w";
        return 200 "default config\n";
    }
_END_
    }
});

# A custom section, --- body_length, checked on every response.
add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    my $expected = $block->body_length;
    $expected = $expected->[$req_idx] if ref $expected eq 'ARRAY';
    return unless defined $expected;
    is_str(length($body), $expected,
           $block->name . " - body_length (req $req_idx, repeated $repeated_req_idx)");
});

no_shuffle();
run_tests();

is(server_port(), $ENV{TEST_NGINX_SERVER_PORT}, "server_port()");
is(server_port_for_client(), server_port(), "server_port_for_client()");
is(server_addr(), "127.0.0.1", "server_addr()");
is(html_dir(), server_root() . "/html", "html_dir() under server_root()");
is(timeout(), 5, "timeout()");
is(repeat_each(), 1, "repeat_each() default");

__DATA__

=== TEST 1: the preprocessor supplies the config
--- request
GET /t
--- response_body
default config
--- body_length: 15



=== TEST 2: a block's own config wins; no root location is generated
--- config
    location / { return 200 "own"; }
--- init
my $conf = do { local (@ARGV, $/) = $Test::Nginx::Util::ConfFile; <> };
Test::More::is(scalar(() = $conf =~ /location \/ \{/g), 1, "only the block's location /");
--- request eval
["GET /own", "GET /index.html"]
--- response_body eval
["own", "own"]
--- body_length eval
[3, 3]



=== TEST 3: master process with two workers, warn log level
--- config
    location = /t {
        return 200 "$pid";
    }
--- init
my $conf = do { local (@ARGV, $/) = $Test::Nginx::Util::ConfFile; <> };
Test::More::like($conf, qr/^worker_processes\s+2;\ndaemon on;\nmaster_process on;\nerror_log \S+ warn;/m,
                 "master, workers and log level in nginx.conf");
--- request
GET /t
--- response_body_like: ^\d+$
--- no_error_log
[notice]
