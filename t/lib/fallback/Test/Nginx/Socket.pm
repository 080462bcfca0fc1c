package Test::Nginx::Socket;

# Fallback Test::Nginx::Socket for machines without CPAN: a small
# re-implementation of the data-driven test scaffold of openresty/test-nginx
# on top of Test::Base.  This half builds the requests of a block, talks to
# nginx over a plain TCP socket and runs the response/error-log assertions;
# Test::Nginx::Util runs the server.  scripts/prove-nginx uses it only when
# the real module is not installed.

use strict;
use warnings;

# -base (not -Base): inherit Test::Base and its exports without Spiffy's
# source filter.  Test::Base's import also handles `use ... 'no_plan'`.
use Test::Base -base;
use Test::Nginx::Util;

use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use IO::Select ();
use IO::Socket::INET ();
use List::Util qw(min);
use POSIX qw(WNOHANG);
use Test::LongString;
use Time::HiRes qw(sleep);

our @EXPORT = qw(
    env_to_nginx is_str plan run_tests repeat_each config_preamble
    worker_connections master_process_enabled no_long_string workers
    master_on master_off log_level no_shuffle no_root_location use_hup
    server_name server_addr server_root html_dir server_port
    server_port_for_client timeout check_accum_error_log
    add_block_preprocessor bail_out add_test_cleanup_handler
    add_cleanup_handler add_response_body_check
);

our @ResponseBodyChecks;
our $TotalConnectingTimeouts = 0;

$Test::Nginx::Util::RunTestHelper = \&run_test_helper;
$Test::Nginx::Util::CheckErrorLog = \&check_error_log;

sub add_response_body_check ($) { push @ResponseBodyChecks, shift }

#--- building requests ---------------------------------------------------------

# --- more_headers text => ("Key: value\r\n"..., is_chunked)
sub parse_more_headers {
    my $text = shift;
    my ($out, $chunked) = ('', 0);
    for my $line (split /\n+/, $text) {
        next if $line =~ /^\s*#/;
        my ($key, $val) = split /:\s*/, $line, 2;
        $val //= '';
        $chunked = 1 if lc $key eq 'transfer-encoding' && $val eq 'chunked';
        $out .= "$key: $val\r\n";
    }
    return ($out, $chunked);
}

# Completes a request written as "METHOD [url [version]]\nbody" into a full
# HTTP request: default url "/" and HTTP/1.1, Host and Connection headers,
# --- more_headers, and Content-Length for a body (which is then trimmed).
# The request may be split into packets; each packet keeps the part of the
# rewritten request that its original text maps to.
sub build_request {
    my ($name, $more, $chunked, $conn, $packets) = @_;
    my $orig = join '', map { $_ // '' } @$packets;
    bail_out("$name - Request line should be non-empty") if $orig eq '';

    my ($first, $content) = $orig =~ /\A([^\n]*\n?)(.*)\z/s;
    $first =~ /^(\s*)(\S+)( *)(?:(\S+)( *))?(?:(\S+)( *))?(\s*)$/
        or bail_out("$name - Request line is not valid. Should be 'meth [url [version]]' but got \"$first\".");
    my ($pre, $meth, $sp1, $url, $sp2, $ver, $sp3, $eol) = ($1, $2, $3, $4, $5, $6, $7, $8);

    my $len_header = '';
    if (!$chunked && $content ne '' && $more !~ /(?:^|\n)Content-Length:/) {
        $content =~ s/^\s+|\s+$//gs;
        $len_header = 'Content-Length: ' . length($content) . "\r\n";
    }
    $more =~ s/(?<!\r)\n/\r\n/g;
    my $headers = '';
    $headers .= "Host: $ServerName\r\n" if $more !~ /(?:^|\n)Host:/i;
    $headers .= "Connection: $conn\r\n" if $more !~ /(?:^|\n)Connection/i;
    $headers .= "$more$len_header\r\n";

    # [original length, replacement] for each piece of the request text
    my @segments = (
        [length $pre, ''], [length $meth, "$meth "], [length $sp1, ''],
        [length($url // ''), ($url // '/') . ' '], [length($sp2 // ''), ''],
        [length($ver // ''), ($ver // 'HTTP/1.1') . "\r\n"],
        [length($sp3 // '') + length $eol, ''],
        [0, $headers],
        [length($orig) - length($first), $content],
    );
    my $new = join '', map { $_->[1] } @segments;

    # map each packet boundary of the original text into the new text
    my ($opos, @cuts) = (0);
    for my $p (@$packets[0 .. $#$packets - 1]) {
        $opos += length($p // '');
        my ($start, $npos) = (0, 0);
        for my $seg (@segments) {
            my ($olen, $text) = @$seg;
            if ($opos >= $start + $olen) {
                $npos += length $text;
            } elsif ($opos > $start) {
                $npos += min($opos - $start, length $text);
            }
            $start += $olen;
        }
        push @cuts, $npos;
    }
    my ($prev, @out) = (0);
    for my $cut (@cuts, length $new) {
        push @out, substr($new, $prev, $cut - $prev);
        $prev = $cut;
    }
    return @out;
}

# The block's request sections as a list of requests, each a list of
# packets {value => data, delay_before => seconds} written separately.
sub requests_from_block {
    my $block = shift;
    my $name = $block->name;

    if (defined(my $raw = $block->raw_request)) {
        return [[map { +{ value => $_ } } ref $raw eq 'ARRAY' ? @$raw : ($raw)]];
    }

    my $more = $block->more_headers || '';
    my $headers_for = sub {
        my $i = shift;
        my $h = ref $more eq 'ARRAY' ? $more->[$i] : $more;
        bail_out("$name - --- more_headers lacks data for request $i") unless defined $h;
        return parse_more_headers($h);
    };

    if (my $reqs = $block->pipelined_requests) {
        bail_out("$name - invalid entries in --- pipelined_requests")
            unless ref $reqs eq 'ARRAY';
        my $data = '';
        for my $i (0 .. $#$reqs) {
            my $req = expand_env_in_text($reqs->[$i], $name);
            # all but the last request keep the connection open
            $data .= join '', build_request($name, $headers_for->($i),
                $i == $#$reqs ? 'close' : 'keep-alive', [$req]);
        }
        return [[{ value => $data }]];
    }

    my $request;
    if (defined $block->request_eval) {
        $request = eval $block->request_eval;
        warn $@ if $@;
    } else {
        $request = $block->request;
        # leading comment lines and blanks are allowed before the request
        1 while defined $request && !ref $request
            && $request =~ s/^\s*#[^\n]+\s+|^\s+//gs;
    }

    my @reqs = ref $request eq 'ARRAY' ? @$request : ($request);
    bail_out("$name - invalid --- request: MUST be string or array of requests")
        if ref $request && ref $request ne 'ARRAY';
    my @list;
    for my $i (0 .. $#reqs) {
        my $one = $reqs[$i];
        my ($hdr, $chunked) = $headers_for->($i);
        if (!ref $one) {
            push @list, [map { +{ value => $_ } }
                         build_request($name, $hdr, $chunked, 'close', [$one])];
            next;
        }
        bail_out("$name - Invalid syntax. $one should be a string or an array of packets.")
            unless ref $one eq 'ARRAY';
        my @packets = map {
            ref $_ eq 'HASH' ? +{%$_} : !ref $_ ? +{ value => $_ }
            : bail_out("$name - Invalid syntax. $_ should be a string or hash with value.")
        } @$one;
        my @data = build_request($name, $hdr, $chunked, 'close',
                                 [map { $_->{value} } @packets]);
        $packets[$_]{value} = $data[$_] for 0 .. $#packets;
        push @list, \@packets;
    }
    return \@list;
}

#--- talking to nginx ------------------------------------------------------------

# Sends the packets over one connection and reads until nginx closes it.
# Returns (data read, status) where status is 'ok', 'timeout' or
# 'connect' (connecting failed; $! says why).
sub http_exchange {
    my ($addr, $port, $packets, $middle_delay, $timeout, $shutdown) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => $addr, PeerPort => $port,
                                     Proto => 'tcp', Timeout => $timeout)
        or return (undef, 'connect');
    $sock->blocking(0);
    local $SIG{PIPE} = 'IGNORE';

    my @queue = @$packets;
    my ($resp, $buf, $off, $first) = ('', undef, 0, 1);
    my $sel = IO::Select->new($sock);
    while (1) {
        # next packet, honouring its delay (the first one goes out at once)
        if (!defined $buf && @queue) {
            my $p = shift @queue;
            my $delay = $p->{delay_before} // ($first ? undef : $middle_delay);
            sleep $delay if $delay && !$first;
            ($buf, $off, $first) = ($p->{value} // '', 0, 0);
        }
        my $writing = defined $buf;
        $! = 0;    # so a plain timeout is not mistaken for EINTR below
        my ($r, $w) = IO::Select->select($sel, $writing ? $sel : undef, undef, $timeout);
        if (!$r && !$w) {
            next if $! == EINTR;
            close $sock;
            return ($resp, 'timeout');
        }
        if ($w && @$w) {
            my $n = syswrite $sock, $buf, length($buf) - $off, $off;
            if (defined $n) {
                $off += $n;
                if ($off >= length $buf) {
                    undef $buf;
                    shutdown $sock, $shutdown if !@queue && defined $shutdown;
                }
            } elsif ($! != EAGAIN && $! != EWOULDBLOCK) {
                warn "write failed: $!\n";
                $resp = "write failed: $!" if $resp eq '';
                last;
            }
        }
        if ($r && @$r) {
            my $n = sysread $sock, my $chunk, 4096;
            if (!defined $n) {
                next if $! == EAGAIN || $! == EWOULDBLOCK;
                warn "WARNING: HTTP response read failure: $!\n";
                last;
            }
            last if $n == 0;
            $resp .= $chunk;
        }
    }
    close $sock;
    return ($resp, 'ok');
}

# One request of a block, retrying the connection while nginx starts up.
sub send_request {
    my ($packets, $middle_delay, $timeout, $block) = @_;
    my $name = $block->name;
    my $head_req = (join '', map { $_->{value} } @$packets) =~ /^\s*HEAD\s+/ ? 1 : 0;
    my $addr = $block->server_addr_for_client // $ServerAddr;
    my $shutdown = $block->shutdown;
    $shutdown = 1 if defined $shutdown && $shutdown =~ /^$/;

    my $max_tries = $TotalConnectingTimeouts ? 20 : 50;
    for my $try (1 .. $max_tries + 1) {
        my ($resp, $status) = http_exchange($addr, $ServerPortForClient, $packets,
                                            $middle_delay, $timeout, $shutdown);
        if ($status eq 'timeout' && !defined $block->abort) {
            Test::More->builder->no_ending(1);
            fail("ERROR: client socket timed out - $name\n");
        }
        return ($resp, $head_req) if $status ne 'connect';
        last if $try > $max_tries;
        # nginx under valgrind is our child: stop waiting once it is gone
        my ($child, $err) = ($Test::Nginx::Util::ChildPid, $!);
        if (defined $child && waitpid($child, WNOHANG) == -1) {
            warn "WARNING: Child process $child is already gone.\n";
            warn `tail -n20 '$Test::Nginx::Util::ErrLogFile'`;
            Test::More->builder->no_ending(1);
            fail("$name - Can't connect to $addr:$ServerPortForClient: $err (aborted)\n");
            return (undef, $head_req);
        }
        my $wait = min(1, (sleep_time() + sleep_time() * $try) * $try / 2);
        warn "$name - Can't connect to $addr:$ServerPortForClient: $!\n"
            . "\tRetry connecting after $wait sec\n" if $wait >= 0.6;
        sleep $wait;
    }
    my $msg = "$name - Can't connect to $addr:$ServerPortForClient: $! (aborted)\n";
    bail_out($msg) if ++$TotalConnectingTimeouts >= 3;
    Test::More->builder->no_ending(1);
    fail($msg);
    return (undef, $head_req);
}

#--- parsing responses -----------------------------------------------------------

# Response "object": { code, headers => [[name, value]...], content }.
# Header lookup is case-insensitive and joins repeated headers with ", ".
sub resp_header {
    my ($res, $key) = @_;
    return undef unless $res;
    (my $want = lc $key) =~ tr/_/-/;
    my @vals = map { $_->[1] } grep { lc($_->[0]) eq $want } @{ $res->{headers} };
    return @vals ? join(', ', @vals) : undef;
}

sub chunked_error {
    Test::More->builder->no_ending(1);
    fail(shift);
    return;
}

# Parses one response off the front of $raw.  Returns ($res, $raw_headers,
# $left) where $left is what follows the response (next pipelined one).
sub parse_response {
    my ($name, $raw, $head_req) = @_;
    my $raw_headers = $raw =~ /(.*?\r\n)\r\n/s ? $1 : '';

    my $str = $raw;
    my $status_line = $str =~ s/^(.*)\n// ? $1 : do { my $s = $str; $str = ''; $s };
    $status_line =~ s/\r\z//;
    my @headers;
    while (1) {
        if ($str =~ s/^([^\s:]+)[ \t]*: ?(.*)\n?//) {
            push @headers, [$1, $2];
        } elsif (@headers && $str =~ s/^([ \t].*)\n?//) {
            $headers[-1][1] .= "\n$1";    # folded header line
        } else {
            $str =~ s/^\r?\n//;
            last;
        }
        $headers[-1][1] =~ s/\r\z//;
    }
    my $code = (split ' ', $status_line, 3)[$status_line =~ /^\d{3} / ? 0 : 1];
    undef $code if defined $code && $code !~ /^\d+$/;
    my $res = { code => $code, headers => \@headers, content => $str };

    return ($res, $raw_headers) if $code && ($code == 304 || $code == 101);

    my $left;
    my $enc = resp_header($res, 'Transfer-Encoding');
    my $len = resp_header($res, 'Content-Length');
    if (defined $enc && $enc eq 'chunked') {
        my @trailers = map { $_->[1] } grep { lc $_->[0] eq 'trailer' } @headers;
        my $decoded = '';
        while (1) {
            if (!@trailers && $str =~ /\G0[ \t]*\r\n\r\n/gc) {
                last;
            } elsif (@trailers && $str =~ /\G0[ \t]*\r\n/gc) {
                for my $t (@trailers) {
                    $str =~ /\G\Q$t\E: [^\n]*\r\n/gc
                        or return chunked_error("$name - invalid trailer data received (expected $t).");
                }
                $str =~ /\G\r\n/gc
                    or return chunked_error("$name - invalid chunked data received (expected CRLF).");
                last;
            } elsif ($str =~ /\G[ \t]*([A-Fa-f0-9]+)[ \t]*\r\n/gc) {
                my $size = hex $1;
                pos($str) + $size <= length $str
                    or return chunked_error("$name - invalid chunked data received "
                                            . "(not enought octets for the data section)");
                $decoded .= substr $str, pos($str), $size;
                pos($str) += $size;
                $str =~ /\G\r\n/gc
                    or return chunked_error("$name - invalid chunked data received (expected CRLF).");
            } elsif ($str =~ /\G(.+)/gcs) {
                return chunked_error("$name - invalid chunked body received: $1");
            } else {
                return chunked_error("$name - no last chunk found - $str");
            }
        }
        $left = substr $str, pos $str if pos($str) < length $str;
        $res->{content} = $decoded;
    } elsif (defined $len && $len =~ /^\d+$/) {
        if (length $str < $len) {
            warn "WARNING: $name - response body truncated: $len expected, but got ",
                length $str, "\n" unless $head_req;
        } elsif (length $str > $len) {
            $left = substr $str, $len;
            $res->{content} = substr $str, 0, $len;
        }
    }
    return ($res, $raw_headers, $left);
}

#--- assertions --------------------------------------------------------------

# With several requests in a block every expectation must be an array
# indexed by request; otherwise a one-element array is accepted too.
sub get_indexed_value ($$$$) {  # ($$$$): block accessors in scalar context
    my ($name, $value, $idx, $need_array) = @_;
    if (ref $value eq 'ARRAY') {
        bail_out("$name - SHOULD NOT HAPPEN: idx != 0 and don't need array.")
            if !$need_array && $idx != 0;
        return $value->[$idx];
    }
    bail_out("$name - You asked for many requests, the expected results should be arrays as well.")
        if $need_array;
    return $value;
}

sub expand_server_port {
    my $s = shift;
    $s =~ s/\$ServerPort\b/$ServerPort/g;
    $s =~ s/\$ServerPortForClient\b/$ServerPortForClient/g;
    return $s;
}

sub check_error_code {
    my ($block, $res, $idx, $need_array) = @_;
    my $name = $block->name;
    my $code = ($res && $res->{code}) || '';
    if (defined $block->error_code_like) {
        my $pat = get_indexed_value($name, $block->error_code_like, $idx, $need_array);
        like($code, qr/$pat/sm, "$name - status code ok");
    } elsif (defined $block->error_code) {
        is($code, get_indexed_value($name, $block->error_code, $idx, $need_array),
           "$name - status code ok");
    } else {
        is($code, 200, "$name - status code ok");
    }
}

sub check_raw_response_headers {
    my ($block, $raw_headers, $idx, $need_array) = @_;
    my $name = $block->name;
    if (defined $block->raw_response_headers_like) {
        my $pat = get_indexed_value($name, $block->raw_response_headers_like, $idx, $need_array);
        like($raw_headers, qr/$pat/s, "$name - raw resp headers like");
    }
    if (defined $block->raw_response_headers_unlike) {
        my $pat = get_indexed_value($name, $block->raw_response_headers_unlike, $idx, $need_array);
        unlike($raw_headers, qr/$pat/s, "$name - raw resp headers unlike");
    }
}

# "Name: value" lines, "!Name" for a header that must be absent.  Returns
# [name, value-or-undef] pairs; a repeated name keeps its last value.
sub parse_header_spec {
    my %seen;
    my @pairs;
    for my $line (split /\n/, shift // '') {
        $line =~ s/^\s+|\s+$//g;
        my ($key, $val) = $line =~ s/^!\s*// ? ($line, undef) : split /\s*:\s*/, $line, 2;
        $key //= '';
        push @pairs, $seen{$key} = [$key, undef] unless $seen{$key};
        $seen{$key}[1] = $val;
    }
    return @pairs;
}

sub check_response_headers {
    my ($block, $res, $raw_headers, $idx, $need_array) = @_;
    my $name = $block->name;
    if (defined $block->response_headers) {
        for my $h (parse_header_spec(
                get_indexed_value($name, $block->response_headers, $idx, $need_array))) {
            my ($key, $val) = @$h;
            if (!defined $val) {
                unlike($raw_headers, qr/^\s*\Q$key\E\s*:/ms,
                       "$name - header $key not present in the raw headers");
                next;
            }
            is(resp_header($res, $key) // '', expand_server_port($val), "$name - header $key ok");
        }
    } elsif (defined $block->response_headers_like) {
        for my $h (parse_header_spec(
                get_indexed_value($name, $block->response_headers_like, $idx, $need_array))) {
            my ($key, $val) = @$h;
            $val //= '';
            like(resp_header($res, $key) // '', qr/^$val$/, "$name - header $key like ok");
        }
    }
}

sub check_response_body {
    my ($block, $res, $idx, $rep, $need_array) = @_;
    my $name = $block->name;
    my $content = $res ? $res->{content} : undef;
    if (defined $content) {
        # strip what some proxies used to inject (the real runner does too)
        $content =~ s/^TE: deflate,gzip;q=0\.3\r\n//gm;
        $content =~ s/^Connection: TE, close\r\n//gm;
    }

    if (defined $block->response_body || defined $block->response_body_eval) {
        my $expected;
        if ($block->response_body_eval) {
            $expected = eval get_indexed_value($name, $block->response_body_eval, $idx, $need_array);
            warn $@ if $@;
        } else {
            $expected = get_indexed_value($name, $block->response_body, $idx, $need_array);
        }
        if (defined $expected && !ref $expected) {
            $expected = expand_env_in_text(expand_server_port($expected), $name);
        }
        my $desc = "$name - response_body - response is expected (repeated req $rep, req $idx)";
        if (ref $expected) {
            like($content, $expected, "$name - response_body - like (repeated req $rep, req $idx)");
        } elsif ($NoLongString) {
            is($content, $expected, $desc);
        } else {
            is_string($content, $expected, $desc);
        }
    } elsif (defined $block->response_body_like || defined $block->response_body_unlike) {
        my $type = defined $block->response_body_like ? 'like' : 'unlike';
        my $pat = expand_server_port(get_indexed_value($name,
            $type eq 'like' ? $block->response_body_like : $block->response_body_unlike,
            $idx, $need_array));
        my $summary = $content // '';
        $summary =~ s/^\s+|\s+$//g;
        $summary =~ s/\s+/ /g;
        my $desc = "$name - response_body_$type - response is expected ($summary)";
        $type eq 'like' ? like($content, qr/$pat/s, $desc)
                        : unlike($content, qr/$pat/s, $desc);
    }

    # hooks see the body as received
    $_->($block, $res ? $res->{content} : undef, $idx, $rep, undef)
        for @ResponseBodyChecks;
}

sub fmt_str {
    my $s = shift;
    chomp $s;
    $s =~ s/"/\\"/g;
    $s =~ s/\r/\\r/g;
    $s =~ s/\n/\\n/g;
    return $s;
}

# true if a pattern (string, qr// or array of them) mentions $str
sub value_contains {
    my ($val, $str) = @_;
    return grep { value_contains($_, $str) } @$val if ref $val eq 'ARRAY';
    return $val =~ /\Q$str\E/;
}

# error_log patterns: lines of substrings, or (via eval) a qr// or an
# array of strings and qr//s.
sub error_log_patterns {
    my $pats = shift;
    return [$pats] if ref $pats eq 'Regexp';
    return [@$pats] if ref $pats eq 'ARRAY';
    chomp $pats;
    return [split /\n+/, $pats];
}

sub line_matches {
    my ($line, $pat) = @_;
    return (ref $pat && $line =~ /$pat/) || $line =~ /\Q$pat\E/;
}

sub check_error_log {
    my ($block, $rep) = @_;
    my $name = $block->name;
    my $lines;
    my %warn_about = map { $_ => 1 } qw(alert crit emerg);

    if (defined(my $spec = $block->error_log)) {
        $warn_about{$_} = 0 for grep { value_contains($spec, "[$_") } keys %warn_about;
        my $pats = error_log_patterns($spec);
        $lines ||= error_log_data() || [];
        for my $line (@$lines) {
            for my $pat (@$pats) {
                next unless defined $pat && line_matches($line, $pat);
                pass("$name - pattern \"$pat\" matches a line in error.log (req $rep)");
                undef $pat;
            }
        }
        for my $pat (grep { defined } @$pats) {
            fail("$name - pattern \"$pat\" should match a line in error.log (req $rep)");
        }
    }

    if (defined(my $spec = $block->no_error_log)) {
        $warn_about{$_} = 0 for grep { value_contains($spec, "[$_") } keys %warn_about;
        my $pats = error_log_patterns($spec);
        $lines ||= error_log_data() || [];
        my %found;
        for my $i (0 .. $#$lines) {
            for my $pat (grep { defined } @$pats) {
                next unless line_matches($lines->[$i], $pat);
                # several failures for one pattern upset the plan count
                Test::More->builder->no_ending(1) if $found{$pat}++;
                my $context = join '', @$lines[$i + 1 .. min($i + 9, $#$lines - 1)];
                fail("$name - pattern \"" . fmt_str($pat) . "\" should not match any line "
                     . "in error.log but matches line \"" . fmt_str($lines->[$i])
                     . "\" (req $rep)\n$context");
            }
        }
        for my $pat (grep { defined && !$found{$_} } @$pats) {
            pass("$name - pattern \"" . fmt_str($pat) . "\" does not match a line in error.log (req $rep)");
        }
    }

    # Loud but non-fatal: serious errors nobody asked about.
    for my $level (grep { $warn_about{$_} } sort keys %warn_about) {
        $lines ||= error_log_data() || [];
        warn "WARNING: $name - ", fmt_str($_), "\n" for grep { /\[$level\]/ } @$lines;
    }
    for my $line (@{ $lines || [] }) {
        next unless $line =~ /\bAssertion .*?failed\b/;
        Test::More->builder->no_ending(1);
        chomp(my $l = $line);
        fail("$name - $l\n");
    }
}

# Sends the block's requests (one repetition) and checks the responses.
sub run_test_helper {
    my ($block, $rep) = @_;
    my $name = $block->name;
    my $reqs = requests_from_block($block);
    bail_out("$name - request empty") unless @$reqs;

    my $timeout = parse_time($block->timeout) // timeout();
    my $pipelined = $block->pipelined_requests ? @{ $block->pipelined_requests } : 0;
    my $need_array = $pipelined || @$reqs > 1;
    my $idx = 0;

    for my $r (0 .. $#$reqs) {
        my ($raw, $head_req) = send_request($reqs->[$r], scalar $block->raw_request_middle_delay,
                                            $timeout, $block);
        my $pending = $pipelined;    # responses still to parse off $raw
        while (1) {
            $raw //= '';
            my ($res, $raw_headers, $left);
            if (!defined $block->ignore_response) {
                if (defined $block->http09) {
                    ($res, $raw_headers) = ({ code => 200, headers => [], content => $raw }, '');
                } else {
                    ($res, $raw_headers, $left) = parse_response($name, $raw, $head_req);
                }
            }
            if ($pending) {
                $raw = $left;
                $pending--;
            } elsif (defined $left && length $left) {
                (my $l = $left) =~ s/([\0-\037\200-\377])/sprintf('\x{%02x}', ord $1)/eg;
                warn "WARNING: $name - unexpected extra bytes after last chunk in response: \"$l\"\n";
            }

            if (!defined $block->ignore_response) {
                check_error_code($block, $res, $idx, $need_array);
                check_raw_response_headers($block, $raw_headers, $idx, $need_array);
                check_response_headers($block, $res, $raw_headers, $idx, $need_array);
                check_response_body($block, $res, $idx, $rep, $need_array);
            }
            # every request but the last gets its own error log check
            if ($pending || $r < $#$reqs) {
                sleep $block->wait if $block->wait;
                check_error_log($block, $rep);
            }
            $idx++;
            last unless $pending;
        }
    }
    sleep $block->wait if $block->wait;
    check_error_log($block, $rep);
}

1;
